"""An engine that returns ready-made outputs at once, to measure everything around the
network: what the host side of ``psicbatch run`` can feed, on any machine, without a GPU.

Three kinds of output, all at the input's size:

- ``clean``: every image defect-free (low probabilities everywhere);
- ``defects``: every tenth image carries one thin, crack-like defect (about 0.1% of its
  pixels), the others are clean;
- ``noisy``: what an untrained network gives: a random field at 1/8 resolution (the
  network's coarsest), bilinearly enlarged, about half of the pixels above threshold.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from psicbatch.engines.base import Engine
from psicbatch.engines.manifest import Manifest
from psicbatch.network_size import STRIDE

NULL_OUTPUTS = ("clean", "defects", "noisy")
DEFECT_EVERY = 10  # "defects": one image in ten
THRESHOLD = 0.5


def null_manifest(size: tuple[int, int], max_batch: int, channels: int = 1) -> Manifest:
    return Manifest(
        backend="null",
        precision="fp32",
        engine_file="",
        engine_sha256="",
        channels=channels,
        input_size=size,
        min_size=size,
        max_size=size,
        min_batch=1,
        max_batch=max_batch,
        checkpoint_sha256="",
        preprocessing={
            "input_size": list(size),
            "mean": [0.5] * channels,
            "std": [0.25] * channels,
        },
        thresholds={"classification": THRESHOLD, "segmentation": THRESHOLD},
        versions={},
    )


def crack(size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """A thin, slightly slanted elongated defect: high probability inside, soft edges."""
    height, width = size
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    cy = height * (0.3 + 0.4 * torch.rand((), generator=generator).item())
    cx = width * (0.3 + 0.4 * torch.rand((), generator=generator).item())
    angle = 0.2 * (torch.rand((), generator=generator).item() - 0.5)
    along = (ys - cy) * math.cos(angle) + (xs - cx) * math.sin(angle)
    across = -(ys - cy) * math.sin(angle) + (xs - cx) * math.cos(angle)
    length, thickness = 0.08 * height, max(1.5, 0.006 * width)
    inside = (along / length) ** 2 + (across / thickness) ** 2
    return 0.02 + 0.96 * torch.exp(-inside)


class NullEngine(Engine):
    """Outputs are computed once per input size and handed out as slices: no work per call."""

    def __init__(self, manifest: Manifest, device: torch.device, outputs: str) -> None:
        super().__init__(Path("null"), manifest, device)
        self.outputs = outputs
        self.cycle = DEFECT_EVERY if outputs == "defects" else 1
        self.position = 0
        self.cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _ready(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if size not in self.cache:
            generator = torch.Generator().manual_seed(0)
            count = self.manifest.max_batch + self.cycle
            probabilities = torch.full((count,), 0.02)
            segmentation = torch.full((count, 1, *size), 0.02)
            if self.outputs == "defects":
                probabilities[::DEFECT_EVERY] = 0.98
                for index in range(0, count, DEFECT_EVERY):
                    segmentation[index, 0] = crack(size, generator)
            elif self.outputs == "noisy":
                coarse = torch.rand(
                    (count, 1, -(-size[0] // STRIDE), -(-size[1] // STRIDE)), generator=generator
                )
                segmentation = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear")
                probabilities.fill_(0.5)
            self.cache[size] = probabilities.to(self.device), segmentation.to(self.device)
        return self.cache[size]

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = images.shape[-2:]
        probabilities, segmentation = self._ready((height, width))
        start = self.position % self.cycle
        self.position += len(images)
        chosen = slice(start, start + len(images))
        return probabilities[chosen], segmentation[chosen]
