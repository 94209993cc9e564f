"""The per-image definition of a result row, kept as the reference the batched
post-processing (``psicbatch.run.postprocess``) must equal, byte for byte."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from psicbatch.metrics import mask_iou
from psicbatch.preprocess import full_resolution_mask
from psicbatch.run import rle


def bbox(mask: np.ndarray) -> dict[str, int] | None:
    """Tight box of the defect pixels as x, y, w, h; None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    x, y = int(cols[0]), int(rows[0])
    return {"x": x, "y": y, "w": int(cols[-1]) - x + 1, "h": int(rows[-1]) - y + 1}


def result_row(
    index: int,
    path: Path,
    probability: np.float32,
    segmentation: np.ndarray,
    original_size: tuple[int, int],
    classification_threshold: float,
    segmentation_threshold: float,
) -> dict[str, Any]:
    probabilities, mask = full_resolution_mask(segmentation, original_size, segmentation_threshold)
    height, width = original_size
    return {
        "input_index": index,
        "path": str(path),
        "path_bytes": os.fsencode(path),
        "width": width,
        "height": height,
        "probability": float(probability),
        "is_defect": bool(probability >= classification_threshold),
        "mask": rle.encode(mask),
        "mask_area": int(mask.sum()),
        "mask_bbox": bbox(mask),
        "seg_max": float(probabilities.max()),
        "error": None,
        "tile": None,
    }


SAME_EXACTLY = ("path", "path_bytes", "width", "height", "is_defect", "error")


def assert_same_results(
    first: list[dict], second: list[dict], atol: float = 1e-4, min_iou: float = 0.99
) -> None:
    """Two runs' tables agree: the same rows, files and decisions, probabilities within
    ``atol`` and masks nearly identical. Runs with other thread counts, worker layouts or
    GPUs may use kernels that differ in the last bits, so floats are not compared exactly."""
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert {k: a[k] for k in SAME_EXACTLY} == {k: b[k] for k in SAME_EXACTLY}
        if a["error"] is not None:
            continue
        assert abs(a["probability"] - b["probability"]) <= atol, a["path"]
        assert abs(a["seg_max"] - b["seg_max"]) <= atol, a["path"]
        if a["mask_area"] or b["mask_area"]:
            assert mask_iou(rle.decode(a["mask"]), rle.decode(b["mask"])) >= min_iou, a["path"]
