"""COCO run-length encoding in numpy, byte-identical to pycocotools' compressed RLE.

Masks are read in column-major order; counts alternate background/defect runs starting
with background; the compressed string stores each count (from the third on, as the
difference to the count two before) in 5-bit groups with a continuation bit, offset by
48 into printable ASCII.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Binary H x W mask -> ``{"size": [h, w], "counts": str}``."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return {"size": list(mask.shape), "counts": ""}
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    return encode_changes(changes, bool(flat[0]), mask.shape)


def encode_changes(changes: np.ndarray, first: bool, size: tuple[int, int]) -> dict[str, Any]:
    """The same encoding from where a column-major mask's values change (positions i with
    mask[i] != mask[i - 1]) and its first value, as the batched post-processing hands
    them over instead of the mask."""
    height, width = size
    counts = np.diff(np.concatenate([[0], changes, [height * width]]))
    if first:  # runs start with background: an empty one first
        counts = np.concatenate([[0], counts])
    return {"size": [height, width], "counts": _compress(counts)}


def empty(size: tuple[int, int]) -> dict[str, Any]:
    """The RLE of a mask without defect pixels, with no per-pixel work."""
    height, width = size
    return {"size": [height, width], "counts": _empty_counts(height * width)}


@functools.lru_cache(maxsize=64)
def _empty_counts(pixels: int) -> str:
    """One run of background: most images of a line, at a handful of sizes."""
    return _compress(np.array([pixels]))


def decode(rle: dict[str, Any]) -> np.ndarray:
    """``{"size": [h, w], "counts": str}`` -> binary H x W mask. An RLE that is not one
    (from an edited file: a missing field, a cut string, negative runs) raises
    ValueError, whatever is wrong with it."""
    try:
        height, width = (int(side) for side in rle["size"])
        counts = _decompress(str(rle["counts"]))
        values = np.zeros(len(counts), dtype=bool)
        values[1::2] = True
        flat = np.repeat(values, counts)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"not a COCO RLE ({type(error).__name__}: {error})") from None
    if flat.size != height * width:
        raise ValueError(f"RLE covers {flat.size} pixels, size says {height}x{width}")
    return flat.reshape((width, height)).T


def _compress(counts: np.ndarray) -> str:
    """All counts at once: each round of the loop takes the next 5-bit group of every value
    still being written (at most 7 rounds for any 32-bit count)."""
    counts = np.asarray(counts, dtype=np.int64)
    values = counts.copy()
    values[3:] -= counts[1:-2]  # from the fourth count on: the difference to two before
    groups, writing = [], []
    active = np.ones(values.shape, dtype=bool)
    while active.any():
        chunk = values & 0x1F
        values = values >> 5  # arithmetic shift: negative differences keep their sign
        more = np.where(chunk & 0x10, values != -1, values != 0)
        groups.append(chunk + np.where(more, 0x20, 0) + 48)
        writing.append(active)
        active = active & more
    chars = np.stack(groups, axis=1)[np.stack(writing, axis=1)]  # value by value, in order
    return chars.astype(np.uint8).tobytes().decode("ascii")


def _decompress(text: str) -> list[int]:
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            chunk = ord(text[position]) - 48
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts
