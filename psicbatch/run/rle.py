"""COCO run-length encoding in numpy, byte-identical to pycocotools' compressed RLE.

Masks are read in column-major order; counts alternate background/defect runs starting
with background; the compressed string stores each count (from the third on, as the
difference to the count two before) in 5-bit groups with a continuation bit, offset by
48 into printable ASCII.
"""

from __future__ import annotations

import numpy as np


def encode(mask: np.ndarray) -> dict[str, object]:
    """Binary H x W mask -> ``{"size": [h, w], "counts": str}``."""
    height, width = mask.shape
    return {"size": [height, width], "counts": _compress(run_lengths(mask))}


def decode(rle: dict[str, object]) -> np.ndarray:
    height, width = rle["size"]
    counts = _decompress(str(rle["counts"]))
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    if flat.size != height * width:
        raise ValueError(f"RLE covers {flat.size} pixels, size says {height}x{width}")
    return flat.reshape((width, height)).T


def run_lengths(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    return [0, *counts] if flat[0] else counts


def _compress(counts: list[int]) -> str:
    chars = []
    for index, count in enumerate(counts):
        value = count - counts[index - 2] if index > 2 else count
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5
            more = value != -1 if chunk & 0x10 else value != 0
            chars.append(chr(chunk + (0x20 if more else 0) + 48))
    return "".join(chars)


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


def bbox(mask: np.ndarray) -> dict[str, int] | None:
    """Tight box of the defect pixels as x, y, w, h; None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    x, y = int(cols[0]), int(rows[0])
    return {"x": x, "y": y, "w": int(cols[-1]) - x + 1, "h": int(rows[-1]) - y + 1}
