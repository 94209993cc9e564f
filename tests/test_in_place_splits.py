"""Cross-validation's folds as views of one image tensor, rearranged in place."""

from __future__ import annotations

import random

import pytest
import torch

from psicbatch.data.masks import DefectMasks
from psicbatch.data.memory import InPlaceSplits, TensorDataset, rearrange_rows


def dataset(count: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(count)
    images = torch.randint(0, 256, (count, 1, 4, 5), dtype=torch.uint8, generator=generator)
    masks = torch.rand((count, 1, 4, 5), generator=generator) > 0.8
    labels = masks.flatten(1).any(dim=1)
    sizes = [(10 + index, 20) for index in range(count)]
    return TensorDataset(images, DefectMasks.from_tensor(masks), labels, sizes)


def test_rows_are_rearranged_in_place_as_indexing_would() -> None:
    shuffle = random.Random(1)
    for count in (1, 2, 7, 30):
        tensor = torch.arange(count * 3).reshape(count, 3)
        sources = list(range(count))
        shuffle.shuffle(sources)
        expected = tensor[sources].clone()
        rearrange_rows(tensor, sources)
        assert torch.equal(tensor, expected)


def test_every_split_equals_copied_subsets_and_shares_the_pixels() -> None:
    """Split after split, as folds follow each other, each part holds the samples asked
    for, in that order, as copying them would, without a copy."""
    count = 23
    original = dataset(count)
    copy = TensorDataset(
        original.images.clone(), original.masks, original.labels.clone(), original.original_sizes
    )
    splits = InPlaceSplits(original)
    shuffle = random.Random(2)
    for _ in range(5):
        order = list(range(count))
        shuffle.shuffle(order)
        first, second = sorted(order[:15]), sorted(order[15:])
        parts = splits.split(first, second)
        for part, samples in zip(parts, (first, second), strict=True):
            expected = copy.subset(samples)
            assert torch.equal(part.images, expected.images)
            assert torch.equal(part.masks[:], expected.masks[:])
            assert torch.equal(part.labels, expected.labels)
            assert part.original_sizes == expected.original_sizes
            assert part.images.untyped_storage().data_ptr() == (
                original.images.untyped_storage().data_ptr()
            )


def test_a_split_must_hold_every_sample_once() -> None:
    splits = InPlaceSplits(dataset(4))
    for first, second in (([0, 1], [2]), ([0, 1], [1, 2, 3]), ([0, 1], [2, 3, 4])):
        with pytest.raises(ValueError, match="every sample exactly once"):
            splits.split(first, second)
