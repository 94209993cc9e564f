"""The engine interface: one way to run a compiled PSIC-Net, whatever the backend.

Engines take and return torch tensors on their own device, so a batch decoded on the GPU
reaches the network and the mask post-processing without crossing to the host. Shapes
are checked here, before any backend sees them, so a wrong size is a clear message
rather than a runtime crash.

Backends that pay for every new batch size (cuDNN's kernel search, a CUDA graph's
capture and memory) get batches padded with zeros to a power of two, at most the
engine's largest batch: a run's partial batches (its last, those that lost a bad file,
a watch run's, a tiled image's last tiles) then meet at most log2(largest) + 1 sizes,
each searched and captured once, instead of one more search per size. The padding costs
under twice the work of a partial batch and nothing for full ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch

from psicbatch.engines.manifest import Manifest
from psicbatch.errors import PsicbatchError


class Engine(ABC):
    def __init__(self, directory: Path, manifest: Manifest, device: torch.device) -> None:
        self.directory = directory
        self.manifest = manifest
        self.device = device

    @property
    def batch_range(self) -> tuple[int, int]:
        return self.manifest.min_batch, self.manifest.max_batch

    def infer(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float32 N x C x H x W -> (defect probability N, mask probability
        N x H x W), both float32 on ``self.device``. Input on another device is moved."""
        self.check_input(tuple(images.shape))
        if not images.is_floating_point():  # raw pixels: normalise first (preprocess)
            raise PsicbatchError(
                f"engine {self.directory} takes normalised float input, got {images.dtype} "
                "(psicbatch.preprocess.normalize turns decoded pixels into it)"
            )
        batch = images.to(self.device, torch.float32, non_blocking=True)
        count = len(batch)
        size = padded_batch(count, self.manifest.max_batch) if self.pads_batches else count
        if size > count:
            batch = torch.cat([batch, batch.new_zeros((size - count, *batch.shape[1:]))])
        probabilities, segmentation = self._run(batch)
        segmentation = segmentation.reshape(size, *images.shape[2:])
        return probabilities.reshape(-1)[:count], segmentation[:count]

    @property
    def pads_batches(self) -> bool:
        """Whether each new batch size costs a search or a capture here (see above)."""
        return False

    def check_input(self, shape: tuple[int, ...]) -> None:
        m = self.manifest
        if len(shape) != 4 or shape[1] != m.channels:
            raise PsicbatchError(
                f"engine {self.directory} takes N x {m.channels} x H x W input, got {tuple(shape)}"
            )
        batch, _, height, width = shape
        if not m.min_batch <= batch <= m.max_batch:
            raise PsicbatchError(
                f"batch of {batch} is outside engine {self.directory}'s range "
                f"{m.min_batch}..{m.max_batch}; rebuild with --max-batch {batch} or send "
                "smaller batches"
            )
        bounds = zip((height, width), m.min_size, m.max_size, strict=True)
        fits = all(lo <= v <= hi for v, lo, hi in bounds)
        if not fits or height % m.size_multiple or width % m.size_multiple:
            raise PsicbatchError(
                f"input size {height}x{width} is outside engine {self.directory}'s range "
                f"{m.min_size[0]}x{m.min_size[1]} .. {m.max_size[0]}x{m.max_size[1]} "
                f"(multiples of {m.size_multiple}); resize to {m.input_size[0]}x{m.input_size[1]}"
            )

    @abstractmethod
    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backend inference on a checked float32 batch already on ``self.device``."""


def padded_batch(batch: int, largest: int) -> int:
    """The power of two at or above ``batch``, or ``largest`` where that is smaller."""
    return min(largest, 1 << (batch - 1).bit_length())
