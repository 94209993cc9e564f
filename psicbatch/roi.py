"""Regions of interest: where a defect matters on the part.

A grayscale image, white (128 and above) where to inspect, black where defects do not
matter (edges, printed serial numbers, fixtures). It is scaled to each image's original
size (nearest neighbour), so one region serves a camera at any resolution. Pixels
outside it are removed from masks, areas, boxes and hence the area rule of a decision
file; the image probability is the network's and stays as it is.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from psicbatch.data.images import check_pixels
from psicbatch.errors import PsicbatchError
from psicbatch.paths import FileSnapshot, readable_path
from psicbatch.region_record import unreadable_region


class RegionOfInterest:
    def __init__(self, source: FileSnapshot) -> None:
        """Decoded from bytes read once (``region_record.read_region``), so the hash
        recorded is that of the region applied."""
        path = source.path
        try:
            with Image.open(io.BytesIO(source.data)) as image:
                check_pixels(path, *image.size)
                pixels = np.asarray(image.convert("L"))
        except UnidentifiedImageError:  # its message names an in-memory buffer
            raise unreadable_region(path, "an unknown or damaged image format") from None
        except (OSError, ValueError) as error:
            raise unreadable_region(path, error) from None
        self.inside = pixels >= 128
        if not self.inside.any():
            raise PsicbatchError(
                f"{readable_path(path)}: the region of interest has no white pixel: nothing "
                "would be inspected"
            )
        self.path = path
        self.sha256 = source.sha256
        self._scaled: dict[tuple[tuple[int, int], torch.device], torch.Tensor] = {}

    def at(self, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """The region at ``size`` (H, W) on ``device``, made once per size and device."""
        key = (size, device)
        if key not in self._scaled:
            region = torch.from_numpy(self.inside.astype(np.float32))[None, None]
            scaled = torch.nn.functional.interpolate(region, size=size, mode="nearest")[0, 0]
            self._scaled[key] = (scaled > 0.5).to(device)
        return self._scaled[key]

    def record(self) -> dict[str, Any]:
        """What results metadata says about the region that was applied."""
        height, width = self.inside.shape
        return {"file": str(self.path), "sha256": self.sha256, "size": [height, width]}
