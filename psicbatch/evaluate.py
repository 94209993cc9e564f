"""Scoring a checkpoint on labelled images with the paper's metrics (see ``metrics``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.progress import Progress

from psicbatch import metrics
from psicbatch.checkpoint import Checkpoint
from psicbatch.data.images import read_mask
from psicbatch.data.layouts import SampleRef
from psicbatch.data.memory import TensorDataset
from psicbatch.predict import predict_batches, resolve_device, resolve_precision
from psicbatch.preprocess import full_resolution_mask

PIXEL_COUNT_KEYS = (
    "defect_intersection",
    "defect_union",
    "background_intersection",
    "background_union",
)


@dataclass
class Evaluation:
    rows: list[dict[str, Any]]  # one per image
    summary: dict[str, Any]


def evaluate(
    checkpoint: Checkpoint,
    samples: list[SampleRef],
    data: TensorDataset,
    batch_size: int = 8,
    device: str = "auto",
    precision: str = "auto",
    progress: Progress | None = None,
) -> Evaluation:
    """Predict every image of ``data`` (already at the checkpoint's input size) and score it
    against its original-resolution mask."""
    torch_device = resolve_device(device)
    precision = resolve_precision(precision, torch_device)
    model = checkpoint.build_model()
    thresholds = checkpoint.thresholds
    task = progress.add_task("evaluating", total=len(samples), status="") if progress else None
    rows: list[dict[str, Any]] = []
    for index, probabilities, seg in predict_batches(
        model, data.images, checkpoint.preprocessing, batch_size, torch_device, precision
    ):
        for offset, sample in enumerate(samples[index]):
            size = data.original_sizes[index.start + offset]
            _, predicted = full_resolution_mask(
                seg[offset, 0].numpy(), size, thresholds.segmentation
            )
            truth = (
                read_mask(sample.mask_path)
                if sample.is_defective and sample.mask_path is not None
                else np.zeros(size, dtype=bool)
            )
            counts = metrics.pixel_counts(truth, predicted)
            probability = float(probabilities[offset])
            rows.append(
                {
                    "id": sample.id,
                    "path": str(sample.image_path),
                    "is_defective": sample.is_defective,
                    "probability": probability,
                    "predicted_defective": probability >= thresholds.classification,
                    "mask_iou": metrics.mask_iou(truth, predicted) if truth.any() else math.nan,
                    "boundary_iou": (
                        metrics.boundary_iou(truth, predicted) if truth.any() else math.nan
                    ),
                    "true_defect_pixels": int(truth.sum()),
                    "predicted_defect_pixels": int(predicted.sum()),
                    **dict(zip(PIXEL_COUNT_KEYS, counts.tolist(), strict=True)),
                }
            )
            if progress is not None:
                progress.advance(task)
    summary = summarize(rows)
    summary["thresholds"] = {
        "classification": thresholds.classification,
        "segmentation": thresholds.segmentation,
    }
    return Evaluation(rows, summary)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Dataset-level metrics from per-image rows (also used to pool folds)."""
    counts = np.array([[row[key] for key in PIXEL_COUNT_KEYS] for row in rows]).sum(axis=0)
    labels = np.array([row["is_defective"] for row in rows], dtype=bool)
    scores = np.array([row["probability"] for row in rows], dtype=float)
    decisions = np.array([row["predicted_defective"] for row in rows], dtype=bool)
    defective = [row for row in rows if not math.isnan(row["mask_iou"])]
    return {
        "images": len(rows),
        "defective_images": int(labels.sum()),
        "segmentation": {
            "mask_miou": _mean(row["mask_iou"] for row in defective),
            "boundary_miou": _mean(row["boundary_iou"] for row in defective),
            "two_class_miou": metrics.two_class_miou(counts),
        },
        "classification": {
            "auc": metrics.roc_auc(labels, scores),
            "ap": metrics.average_precision(labels, scores),
            **metrics.classification_counts(labels, decisions),
        },
    }


def _mean(values: Any) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan
