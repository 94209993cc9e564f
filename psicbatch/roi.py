"""Regions of interest: where a defect matters on the part.

A grayscale image, white (128 and above) where to inspect, black where defects do not
matter (edges, printed serial numbers, fixtures). It is scaled to each image's original
size (nearest neighbour), so one region serves a camera at any resolution. Pixels
outside it are removed from masks, areas, boxes and hence the area rule of a decision
file; the image probability is the network's and stays as it is.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from psicbatch.data.images import check_pixels
from psicbatch.errors import PsicbatchError
from psicbatch.paths import regular_file_bytes


class RegionOfInterest:
    def __init__(self, path: Path) -> None:
        try:
            data = regular_file_bytes(path)  # not a pipe, whose read would wait for ever
            with Image.open(io.BytesIO(data)) as image:
                check_pixels(path, *image.size)
                pixels = np.asarray(image.convert("L"))
        except (OSError, ValueError) as error:
            problem = f"not a readable region-of-interest image ({error})"
            raise PsicbatchError(f"{path}: {problem}") from None
        self.inside = pixels >= 128
        if not self.inside.any():
            raise PsicbatchError(
                f"{path}: the region of interest has no white pixel: nothing would be inspected"
            )
        self.path = path
        self.sha256 = hashlib.sha256(data).hexdigest()  # of the bytes read, not a later file
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
