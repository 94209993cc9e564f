"""Scoring an engine on labelled images with the paper's metrics (see ``metrics``).

Evaluation runs through the same ``Engine`` interface as ``psicbatch run``, so the
figures describe the engine that is deployed: a checkpoint (torch engine), or a built
ONNX Runtime, int8 or TensorRT engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from psicbatch import metrics
from psicbatch.data.images import read_image, read_mask
from psicbatch.data.layouts import SampleRef, read_dataset
from psicbatch.data.memory import TensorDataset, load_into_memory
from psicbatch.engines import Engine
from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.preprocess import engine_input, full_resolution_mask, normalize
from psicbatch.roi import RegionOfInterest
from psicbatch.scores import (
    ClassificationScores,
    EngineDescription,
    EvaluationSummary,
    SegmentationScores,
)
from psicbatch.tiles import TileGrid

PIXEL_COUNT_KEYS = (
    "defect_intersection",
    "defect_union",
    "background_intersection",
    "background_union",
)


@dataclass
class Evaluation:
    rows: list[dict[str, Any]]  # one per image
    summary: EvaluationSummary


def evaluate_dataset(
    spec: EngineSpec,
    data: Path,
    layout: str,
    device: str,
    batch_size: int = 8,
    compare_to: Path | None = None,
    progress: Progress | None = None,
    roi: RegionOfInterest | None = None,
) -> Evaluation:
    """``psicbatch eval``: open the engine (first, so a bad engine fails before any image is
    read), read the labelled dataset at its input size and score it; with ``compare_to``
    also score that checkpoint in fp32 on the same images and add the differences; with
    ``roi``, masks (true and predicted) count inside the region of interest only."""
    engine = open_engine(spec, device, batch_size)
    samples = read_dataset(data, layout)
    manifest = engine.manifest
    preprocessing = manifest.engine_preprocessing()
    tensors = None
    if preprocessing.tile_overlap is None:  # tiled models read each image when scored
        tensors = load_into_memory(
            samples, manifest.input_size, manifest.channels, progress, preprocessing.bit_depth
        )

    def score(scored: Engine) -> Evaluation:
        if tensors is None:
            return evaluate_tiled(scored, samples, progress, roi)
        return evaluate(scored, samples, tensors, batch_size, progress, roi)

    result = score(engine)
    if compare_to is not None:
        fp32 = EngineSpec(checkpoint=compare_to, precision="fp32", input_size=manifest.input_size)
        baseline = score(open_engine(fp32, device, batch_size))
        result.summary.comparison = result.summary.compare(baseline.summary, str(compare_to))
    return result


def evaluate(
    engine: Engine,
    samples: list[SampleRef],
    data: TensorDataset,
    batch_size: int = 8,
    progress: Progress | None = None,
    roi: RegionOfInterest | None = None,
) -> Evaluation:
    """Run ``engine`` (any backend: the engine that is deployed is the one scored) on every
    image of ``data`` (uint8, already at the engine's input size) and score each against
    its original-resolution mask (inside ``roi`` only, when given, as ``run --roi``)."""
    preprocessing = engine.manifest.engine_preprocessing()
    thresholds = engine.manifest.thresholds
    step = max(1, min(batch_size, engine.batch_range[1]))
    task = progress.add_task("evaluating", total=len(samples), status="") if progress else None
    rows: list[dict[str, Any]] = []
    for start in range(0, len(samples), step):
        outputs = engine.infer(normalize(data.images[start : start + step], preprocessing))
        probabilities, segmentation = (output.cpu().numpy() for output in outputs)
        for offset, sample in enumerate(samples[start : start + step]):
            size = data.original_sizes[start + offset]
            _, predicted = full_resolution_mask(
                segmentation[offset], size, thresholds["segmentation"]
            )
            inside = roi.at(size, torch.device("cpu")).numpy() if roi is not None else None
            rows.append(
                _score(
                    sample,
                    float(probabilities[offset]),
                    predicted,
                    size,
                    thresholds["classification"],
                    inside,
                )
            )
            if progress is not None and task is not None:
                progress.advance(task)
    return _evaluation(rows, engine, roi)


def evaluate_tiled(
    engine: Engine,
    samples: list[SampleRef],
    progress: Progress | None = None,
    roi: RegionOfInterest | None = None,
) -> Evaluation:
    """As ``evaluate``, for a tiled model: each image read at native resolution, cut into
    the engine's tiles and stitched back as ``psicbatch run`` does (``tiles.TileGrid``)."""
    preprocessing = engine.manifest.engine_preprocessing()
    thresholds = engine.manifest.thresholds
    largest = engine.batch_range[1]
    task = progress.add_task("evaluating", total=len(samples), status="") if progress else None
    rows: list[dict[str, Any]] = []
    for sample in samples:
        image = read_image(sample.image_path, preprocessing.channels, None, preprocessing.bit_depth)
        cut, grid = engine_input(image, preprocessing)
        assert isinstance(grid, TileGrid), "a tiled model's input is tiles"
        tiles = torch.from_numpy(cut)
        outputs = [
            engine.infer(normalize(tiles[start : start + largest], preprocessing).to(engine.device))
            for start in range(0, len(tiles), largest)
        ]
        probability, _ = grid.deciding_tile(torch.cat([p for p, _ in outputs]).cpu())
        stitched = grid.stitch(torch.cat([s for _, s in outputs]).cpu()).numpy()
        size = grid.size
        inside = roi.at(size, torch.device("cpu")).numpy() if roi is not None else None
        predicted = stitched >= thresholds["segmentation"]
        rows.append(
            _score(sample, probability, predicted, size, thresholds["classification"], inside)
        )
        if progress is not None and task is not None:
            progress.advance(task)
    return _evaluation(rows, engine, roi)


def _evaluation(
    rows: list[dict[str, Any]], engine: Engine, roi: RegionOfInterest | None
) -> Evaluation:
    summary = metrics_summary(rows)
    summary.thresholds = dict(engine.manifest.thresholds)
    summary.engine = describe(engine)
    summary.roi = roi.record() if roi is not None else None
    return Evaluation(rows, summary)


def describe(engine: Engine) -> EngineDescription:
    m = engine.manifest
    return EngineDescription(
        backend=m.backend,
        precision=m.precision,
        device=str(engine.device),
        engine_sha256=m.engine_sha256,
        checkpoint_sha256=m.checkpoint_sha256,
        input_size=(m.input_size[0], m.input_size[1]),
        selection=m.selection,
    )


def _score(
    sample: SampleRef,
    probability: float,
    predicted: np.ndarray,
    size: tuple[int, int],
    threshold: float,
    inside: np.ndarray | None = None,
) -> dict[str, Any]:
    truth = (
        read_mask(sample.mask_path)
        if sample.is_defective and sample.mask_path is not None
        else np.zeros(size, dtype=bool)
    )
    if inside is not None:  # only the region of interest counts, for both masks
        truth, predicted = truth & inside, predicted & inside
    counts = metrics.pixel_counts(truth, predicted)
    return {
        "id": sample.id,
        "path": str(sample.image_path),
        "is_defective": sample.is_defective,
        "probability": probability,
        "predicted_defective": probability >= threshold,
        "mask_iou": metrics.mask_iou(truth, predicted) if truth.any() else math.nan,
        "boundary_iou": metrics.boundary_iou(truth, predicted) if truth.any() else math.nan,
        "true_defect_pixels": int(truth.sum()),
        "predicted_defect_pixels": int(predicted.sum()),
        **dict(zip(PIXEL_COUNT_KEYS, counts.tolist(), strict=True)),
    }


def image_iou(row: dict[str, Any], kind: str, gated: bool) -> float:
    """One image's mask or boundary IoU (``kind``) counted over all images: a defect-free
    image scores 1 when nothing is predicted on it and 0 otherwise. ``gated``: the mask of
    an image judged defect-free counts as empty, as ``psicbatch run --masks gated`` writes
    it (a defective image judged defect-free then scores 0)."""
    kept = row["predicted_defective"] or not gated
    if not math.isnan(row[kind]):  # a defective image
        return row[kind] if kept else 0.0
    return 0.0 if kept and row["predicted_defect_pixels"] else 1.0


def metrics_summary(rows: list[dict[str, Any]]) -> EvaluationSummary:
    """Dataset-level metrics from per-image rows (also used to pool folds).

    Mask and boundary mIoU: over the defective images (strict; what an overlay shows),
    over all images, and over all images with decision-gated masks (see ``image_iou``).
    """
    counts = np.array([[row[key] for key in PIXEL_COUNT_KEYS] for row in rows]).sum(axis=0)
    labels = np.array([row["is_defective"] for row in rows], dtype=bool)
    scores = np.array([row["probability"] for row in rows], dtype=float)
    decisions = np.array([row["predicted_defective"] for row in rows], dtype=bool)
    defective = [row for row in rows if not math.isnan(row["mask_iou"])]
    readings = {
        f"{kind}_miou_{reading}": _mean(image_iou(row, f"{kind}_iou", gated) for row in rows)
        for reading, gated in (("all", False), ("gated", True))
        for kind in ("mask", "boundary")
    }
    return EvaluationSummary(
        images=len(rows),
        defective_images=int(labels.sum()),
        segmentation=SegmentationScores(
            mask_miou=_mean(row["mask_iou"] for row in defective),
            boundary_miou=_mean(row["boundary_iou"] for row in defective),
            two_class_miou=metrics.two_class_miou(counts),
            **readings,
        ),
        classification=ClassificationScores(
            auc=metrics.roc_auc(labels, scores),
            ap=metrics.average_precision(labels, scores),
            **metrics.classification_counts(labels, decisions),
        ),
    )


def _mean(values: Any) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan
