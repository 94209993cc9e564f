from __future__ import annotations

import numpy as np
import pytest
import torch

from psicbatch.data.masks import DefectMasks


def random_masks(count: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(count, 1, *size, generator=generator) > 0.97
    masks[::3] = False  # defect-free masks among them
    return masks


def test_masks_come_back_as_they_were_put() -> None:
    """13 x 7 pixels: a mask's bits do not fill its last byte."""
    masks = random_masks(10, (13, 7), seed=0)
    held = DefectMasks.from_tensor(masks)
    assert len(held) == 10 and held.size == (13, 7)
    assert torch.equal(held[:], masks)
    for index in ([4, 1, 1], np.array([9, 0]), torch.tensor([2, 3]), [-1], slice(2, 8, 3)):
        assert torch.equal(held[index], masks[index]), index


def test_only_masks_with_a_defect_pixel_are_held() -> None:
    masks = random_masks(9, (16, 16), seed=1)
    held = DefectMasks.from_tensor(masks)
    assert held.defective == [1, 2, 4, 5, 7, 8]
    held.put(2, np.zeros((16, 16), bool))  # cleared: no longer held
    assert held.defective == [1, 4, 5, 7, 8] and not held[[2]].any()
    with pytest.raises(ValueError, match=r"\(16, 15\)"):
        held.put(0, np.zeros((16, 15), bool))


def test_a_subset_is_renumbered_from_zero() -> None:
    masks = random_masks(12, (8, 9), seed=2)
    indices = [11, 3, 4, 0]
    subset = DefectMasks.from_tensor(masks).subset(indices)
    assert len(subset) == 4 and torch.equal(subset[:], masks[indices])
