from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco

from psicbatch.run import rle


def coco_encode(mask: np.ndarray) -> dict:
    encoded = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(encoded["size"]), "counts": encoded["counts"].decode()}


def edge_cases() -> list[np.ndarray]:
    cases = [
        np.zeros((5, 7), bool),
        np.ones((5, 7), bool),
        np.zeros((1, 1), bool),
        np.ones((1, 1), bool),
    ]
    for row, col in ((0, 0), (5, 3), (2, 1)):
        mask = np.zeros((6, 4), bool)
        mask[row, col] = True
        cases.append(mask)
    long_run = np.zeros((1408, 512), bool)
    long_run[100:900, 200:210] = True
    cases.append(long_run)
    return cases


@pytest.mark.parametrize("mask", edge_cases(), ids=lambda m: f"{m.shape}-{int(m.sum())}")
def test_edge_cases_match_pycocotools(mask: np.ndarray) -> None:
    assert rle.encode(mask) == coco_encode(mask)
    assert np.array_equal(rle.decode(rle.encode(mask)), mask)


@settings(max_examples=150, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 40), st.integers(1, 40)), elements=st.booleans()))
def test_random_masks_round_trip_and_match_pycocotools(mask: np.ndarray) -> None:
    encoded = rle.encode(mask)
    assert encoded == coco_encode(mask)
    assert np.array_equal(rle.decode(encoded), mask)
    assert np.array_equal(
        coco.decode({"size": encoded["size"], "counts": encoded["counts"].encode()}), mask
    )


def test_decode_rejects_wrong_size() -> None:
    with pytest.raises(ValueError, match="covers 35 pixels"):
        rle.decode({"size": [6, 6], "counts": rle.encode(np.zeros((5, 7), bool))["counts"]})
