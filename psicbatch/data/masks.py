"""Training masks held compactly: only those with a defect pixel, eight pixels a byte."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

CHUNK = 16  # masks unpacked at once where all of them are worked on

Index = slice | Sequence[int] | np.ndarray | torch.Tensor


class DefectMasks:
    """N bool masks of one size (H x W), indexed like a bool tensor N x 1 x H x W.

    Most training images, and most tiles of a tiled training, are defect-free; a bool
    tensor would take a byte per pixel of every one of them. Here a defect-free mask takes
    nothing and one with a defect pixel an eighth of a byte per pixel (``np.packbits``);
    a batch is unpacked as it is drawn."""

    def __init__(
        self, count: int, size: tuple[int, int], packed: dict[int, np.ndarray] | None = None
    ) -> None:
        self.count = count
        self.size = size
        self._packed: dict[int, np.ndarray] = dict(packed or {})

    @classmethod
    def from_tensor(cls, masks: torch.Tensor) -> DefectMasks:
        """From a bool tensor N x 1 x H x W."""
        held = cls(len(masks), (masks.shape[-2], masks.shape[-1]))
        for index in torch.nonzero(masks.flatten(1).any(dim=1)).flatten().tolist():
            held.put(index, masks[index, 0].numpy())
        return held

    def __len__(self) -> int:
        return self.count

    @property
    def defective(self) -> list[int]:
        """The indices of the masks with a defect pixel, in order."""
        return sorted(self._packed)

    def put(self, index: int, mask: np.ndarray) -> None:
        """Set mask ``index`` (H x W, defect where true)."""
        if mask.shape != self.size:
            raise ValueError(f"a mask of {mask.shape} among masks of {self.size}")
        if mask.any():
            self._packed[index] = np.packbits(mask.astype(bool, copy=False), axis=None)
        else:
            self._packed.pop(index, None)

    def __getitem__(self, index: Index) -> torch.Tensor:
        rows = np.arange(self.count)[np.asarray(index) if not isinstance(index, slice) else index]
        pixels = self.size[0] * self.size[1]
        masks = np.zeros((len(rows), pixels), dtype=bool)
        for position, row in enumerate(rows.tolist()):
            if (packed := self._packed.get(row)) is not None:
                masks[position] = np.unpackbits(packed, count=pixels).view(bool)
        return torch.from_numpy(masks.reshape(len(rows), 1, *self.size))

    def subset(self, indices: Sequence[int]) -> DefectMasks:
        """Masks ``indices``, renumbered from 0 (the packed bytes are shared, not copied)."""
        packed = {new: self._packed[old] for new, old in enumerate(indices) if old in self._packed}
        return DefectMasks(len(indices), self.size, packed)

    def dilated(self, pixels: int) -> DefectMasks:
        """Every mask grown by ``pixels`` (a square neighbourhood); defect-free ones stay
        empty, and only a few are unpacked at once."""
        if pixels <= 0:
            return self
        grown = DefectMasks(self.count, self.size)
        defective = self.defective
        for start in range(0, len(defective), CHUNK):
            chunk = defective[start : start + CHUNK]
            pooled = F.max_pool2d(self[chunk].float(), 2 * pixels + 1, stride=1, padding=pixels)
            for row, mask in zip(chunk, (pooled > 0).numpy(), strict=True):
                grown.put(row, mask[0])
        return grown
