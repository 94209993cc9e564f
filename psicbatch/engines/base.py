"""The engine interface: one way to run a compiled PSIC-Net, whatever the backend.

The runner and the benchmark only ever call ``infer``; shapes are checked here, before
any backend sees them, so a wrong size is a clear message rather than a runtime crash.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from psicbatch.engines.manifest import Manifest
from psicbatch.errors import PsicbatchError


class Engine(ABC):
    def __init__(self, directory: Path, manifest: Manifest) -> None:
        self.directory = directory
        self.manifest = manifest

    @property
    def input_size(self) -> tuple[int, int]:
        """The size (H, W) images should be resized to for this engine."""
        return self.manifest.input_size

    @property
    def batch_range(self) -> tuple[int, int]:
        return self.manifest.min_batch, self.manifest.max_batch

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised float32 N x C x H x W -> (defect probability N, mask probability N x H x W)."""
        self.check_input(images.shape)
        probabilities, segmentation = self._run(np.ascontiguousarray(images, dtype=np.float32))
        return probabilities.reshape(-1), segmentation.reshape(len(images), *images.shape[2:])

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
                f"{m.min_batch}..{m.max_batch}; rebuild with --max-batch {batch} or send smaller batches"
            )
        fits = all(lo <= v <= hi for v, lo, hi in zip((height, width), m.min_size, m.max_size))
        if not fits or height % m.size_multiple or width % m.size_multiple:
            raise PsicbatchError(
                f"input size {height}x{width} is outside engine {self.directory}'s range "
                f"{m.min_size[0]}x{m.min_size[1]} .. {m.max_size[0]}x{m.max_size[1]} "
                f"(multiples of {m.size_multiple}); resize to {m.input_size[0]}x{m.input_size[1]}"
            )

    @abstractmethod
    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backend inference on a checked, contiguous float32 batch."""
