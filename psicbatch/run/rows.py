"""One result row per input image: probabilities and the mask at the original resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from psicbatch.preprocess import full_resolution_mask
from psicbatch.run import rle


def result_row(
    index: int,
    path: Path,
    probability: float,
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
        "width": width,
        "height": height,
        "probability": float(probability),
        "is_defect": bool(probability >= classification_threshold),
        "mask": rle.encode(mask),
        "mask_area": int(mask.sum()),
        "mask_bbox": rle.bbox(mask),
        "seg_max": float(probabilities.max()),
        "error": None,
    }


def error_row(index: int, path: Path, message: str) -> dict[str, Any]:
    return {"input_index": index, "path": str(path), "error": message}
