"""Scoring an engine on labelled images with the paper's metrics (see ``metrics``).

Evaluation runs through the same ``Engine`` interface as ``psicbatch run``, so the
figures describe the engine that is deployed: a checkpoint (torch engine), or a built
ONNX Runtime, int8 or TensorRT engine.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from psicbatch import metrics
from psicbatch.data.combined import WHOLE, division_note, read_datasets
from psicbatch.data.image_check import refuse_unusable
from psicbatch.data.labelled import LabelledImage, from_memory, read_labelled
from psicbatch.data.layouts import SampleRef
from psicbatch.data.memory import TensorDataset
from psicbatch.data.splits import grouped_by
from psicbatch.decisions import Rule
from psicbatch.engines.base import Engine
from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.errors import PsicbatchError
from psicbatch.evaluation_page import evaluation_html
from psicbatch.fingerprints import overlap_of
from psicbatch.gallery import Gallery
from psicbatch.part_scores import DATASET_GROUPS, grouping_of, part_scores
from psicbatch.paths import path_bytes, readable_path
from psicbatch.preprocess import full_resolution_mask, normalize
from psicbatch.reports import write_evaluation_report
from psicbatch.roi import RegionOfInterest
from psicbatch.run.batch_choice import chosen_batch_size
from psicbatch.run.run_decisions import RunDecisions, check_decisions_fit
from psicbatch.run.stages import staged
from psicbatch.scores import (
    AppliedDecisions,
    ClassificationScores,
    DefectTypeScores,
    EngineDescription,
    EvaluationSummary,
    SegmentationScores,
    escapes_by_type,
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
    gallery: Gallery = field(default_factory=Gallery)  # the images it got most wrong

    def write(self, out_dir: Path, title: str) -> list[str]:
        """``report.md``, ``metrics.json``, ``predictions.parquet``, the curves (where the
        labels have both kinds) and the page with the images the engine got most wrong,
        ``report.html``; the names of the files written."""
        curves = write_evaluation_report(out_dir, self.rows, self.summary, title)
        page = evaluation_html(self.summary, self.gallery, title, curves)
        (out_dir / "report.html").write_text(page, encoding="utf-8")
        tables = ["report.md", "metrics.json", "predictions.parquet"]
        return ["report.html", *tables, *(curve.name for curve in curves)]


def evaluate_dataset(
    spec: EngineSpec,
    data: Sequence[Path],
    layout: str,
    device: str,
    batch_size: int | None = None,
    compare_to: Path | None = None,
    progress: Progress | None = None,
    roi: RegionOfInterest | None = None,
    decisions: RunDecisions | None = None,
    samples: list[SampleRef] | None = None,
    digests: list[bytes | None] | None = None,
    split: str = WHOLE,
    group_by: str | None = None,
) -> Evaluation:
    """``psicbatch eval``: open the engine (first, so a bad engine fails before any image is
    read), then score it on the labelled dataset (the folders ``data``, read together as
    training reads them), each image read once as it is needed;
    with ``compare_to`` also score that checkpoint in fp32 on the same images and add the
    differences; with ``roi``, masks (true and predicted) count inside the region of
    interest only; with ``decisions``, images are judged as a run of them judges them
    (refused for decisions chosen on another engine's probabilities). ``split``: only that
    part of a published train/test division. ``samples`` and ``digests``: the dataset's
    images (of that part) and their files' digests (in its order), where the caller made
    them already. ``group_by``: images whose ids share this pattern's match are one part
    (``data.splits.grouped_by``; default: the dataset's groups), judged together.
    ``batch_size``: None, as a run chooses it (``run.batch_choice``)."""
    batch_size = batch_size or chosen_batch_size(spec, device)[0]
    engine = open_engine(spec, device, batch_size)
    if decisions is not None:
        check_decisions_fit(decisions.record, vars(engine.manifest))
    engines = [engine]
    if compare_to is not None:
        fp32 = EngineSpec(
            checkpoint=compare_to, precision="fp32", input_size=engine.manifest.input_size
        )
        engines.append(open_engine(fp32, device, batch_size))
        _check_same_reading(engine, engines[1], compare_to)
    if samples is None:
        samples, _ = read_datasets(data, layout, split)
    if group_by is not None:
        samples = grouped_by(samples, group_by)
    preprocessing = engine.manifest.engine_preprocessing()
    # Files scoring would stop at, known in seconds: the first named, the others counted.
    refuse_unusable(samples, shlex.join(map(str, data)), preprocessing.bit_depth)
    images = read_labelled(samples, preprocessing, batch_size)
    result, *baseline = evaluate_engines(
        engines,
        images,
        len(samples),
        batch_size,
        progress,
        roi,
        decisions=decisions,
        grouping=grouping_of(group_by),
    )
    files = [sample.image_path for sample in samples]
    record = decisions.record if decisions is not None else None
    manifest = engine.manifest
    result.summary.overlap = overlap_of(
        files, manifest.training_images, record, digests, manifest.chosen_on
    )
    result.summary.division = division_note(data, samples, split)
    if baseline:
        result.summary.comparison = result.summary.compare(baseline[0].summary, str(compare_to))
    return result


def evaluate(
    engine: Engine,
    samples: list[SampleRef],
    data: TensorDataset,
    batch_size: int = 8,
    progress: Progress | None = None,
    grouping: str = DATASET_GROUPS,
) -> Evaluation:
    """``evaluate_engines`` for one engine on images already in memory (cross-validation's
    test folds)."""
    images = from_memory(samples, data)
    return evaluate_engines(
        [engine], images, len(samples), batch_size, progress, grouping=grouping
    )[0]


def evaluate_engines(
    engines: list[Engine],
    images: Iterable[LabelledImage],
    count: int,
    batch_size: int = 8,
    progress: Progress | None = None,
    roi: RegionOfInterest | None = None,
    overlap: bool | None = None,
    decisions: RunDecisions | None = None,
    grouping: str = DATASET_GROUPS,
) -> list[Evaluation]:
    """Run every engine (any backend: the engine that is deployed is the one scored) on
    each batch of ``images`` and score each image against its original-resolution mask
    (inside ``roi`` only, when given, as ``run --roi``): one evaluation per engine. A
    tiled model's images go one at a time, their tiles stitched back as ``psicbatch run``
    does (``tiles.TileGrid``). ``overlap``: infer beside the scoring (default: on GPUs).
    Every engine judges images by the same ``decisions`` (default: its model's
    threshold). ``grouping``: what made the samples' groups, the parts they judge together."""
    tiled = engines[0].manifest.engine_preprocessing().tile_overlap is not None
    step = 1 if tiled else max(1, min(batch_size, *(e.batch_range[1] for e in engines)))
    task = progress.add_task("evaluating", total=count, status="") if progress else None
    rows: list[list[dict[str, Any]]] = [[] for _ in engines]
    judged = [
        applied_decisions(decisions, engine.manifest.thresholds["classification"])
        for engine in engines
    ]
    galleries = [Gallery() for _ in engines]
    # On a GPU, inference runs a batch ahead in a thread of its own while this one scores,
    # or the host's scoring would leave the device idle in between. On a CPU both share
    # the same cores: no faster, and inference in a second thread costs memory (its own
    # thread team and buffers; benchmarks/results/eval-memory-avx512/).
    if overlap is None:
        overlap = any(engine.device.type == "cuda" for engine in engines)
    infer = partial(_infer_group, engines)
    groups = _groups(images, step)
    inferred = staged(groups, infer, 1, name="eval-infer") if overlap else map(infer, groups)
    for group, outputs in inferred:
        for engine, output, decision, engine_rows, gallery in zip(
            engines, outputs, judged, rows, galleries, strict=True
        ):
            _score_group(engine, group, output, roi, decision, engine_rows, gallery)
        if progress is not None and task is not None:
            progress.advance(task, len(group))
    return [
        Evaluation(engine_rows, _summary(engine_rows, engine, roi, decision, grouping), gallery)
        for engine, engine_rows, decision, gallery in zip(
            engines, rows, judged, galleries, strict=True
        )
    ]


def applied_decisions(decisions: RunDecisions | None, model_threshold: float) -> AppliedDecisions:
    """What an evaluation judges images by, and where that comes from: a decision file,
    decisions stored with the engine, a given threshold, or the model's own."""
    if decisions is None or decisions.threshold is None:
        return AppliedDecisions(model_threshold)
    rule = decisions.rule
    return AppliedDecisions.from_record(
        decisions.threshold, decisions.record, rule.name, rule.min_area
    )


def _check_same_reading(engine: Engine, baseline: Engine, name: Path) -> None:
    """The compared checkpoint must read images as the engine does, since both score the
    same decoded pixels."""
    ours, theirs = (e.manifest.engine_preprocessing() for e in (engine, baseline))
    fields = ("channels", "bit_depth", "interpolation", "tile_overlap")
    differing = [f for f in fields if getattr(ours, f) != getattr(theirs, f)]
    if differing:
        found = ", ".join(
            f"{f} {getattr(theirs, f)} (engine: {getattr(ours, f)})" for f in differing
        )
        raise PsicbatchError(
            f"{readable_path(name)}: reads images differently from the engine scored, {found}; "
            "compare the engine with the checkpoint it was built from"
        )


def _groups(images: Iterable[LabelledImage], size: int) -> Iterator[list[LabelledImage]]:
    group: list[LabelledImage] = []
    for image in images:
        group.append(image)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _infer_group(
    engines: list[Engine], group: list[LabelledImage]
) -> tuple[list[LabelledImage], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Every engine's outputs for a batch of images, or for one tiled image's tiles."""
    tiled = isinstance(group[0].placement, TileGrid)
    pixels = group[0].pixels if tiled else np.stack([image.pixels for image in group])
    return group, [_infer(engine, pixels) for engine in engines]


def _score_group(
    engine: Engine,
    group: list[LabelledImage],
    outputs: tuple[torch.Tensor, torch.Tensor],
    roi: RegionOfInterest | None,
    decision: AppliedDecisions,
    rows: list[dict[str, Any]],
    gallery: Gallery,
) -> None:
    """One engine's rows for a batch of images, or for one tiled image, from its outputs,
    added to ``rows``; the gallery sees each."""
    thresholds = engine.manifest.thresholds
    probabilities, segmentation = outputs
    grid = group[0].placement
    if isinstance(grid, TileGrid):
        (image,) = group
        probability, _ = grid.deciding_tile(probabilities)
        stitched = grid.stitch(segmentation).numpy()
        scored = [(image, probability, stitched >= thresholds["segmentation"])]
    else:
        scored = [
            (
                image,
                float(probability),
                full_resolution_mask(maps.numpy(), image.size, thresholds["segmentation"])[1],
            )
            for image, probability, maps in zip(group, probabilities, segmentation, strict=True)
        ]
    for image, probability, predicted in scored:
        truth = image.truth
        if roi is not None:  # only the region of interest counts, for both masks
            inside = roi.at(image.size, torch.device("cpu")).numpy()
            predicted = predicted & inside
            truth = None if truth is None else truth & inside
        judged = _judged_defective(decision, probability, int(predicted.sum()))
        row = image_row(image.sample, probability, truth, predicted, judged)
        rows.append(row)
        gallery.offer(row, truth, predicted)


def _infer(engine: Engine, pixels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's outputs for N x C x H x W pixels (uploaded as they are, normalised
    where the engine runs), in batches it accepts, back on the CPU."""
    preprocessing = engine.manifest.engine_preprocessing()
    largest = engine.batch_range[1]
    batch = torch.from_numpy(pixels)
    outputs = [
        engine.infer(normalize(batch[start : start + largest].to(engine.device), preprocessing))
        for start in range(0, len(batch), largest)
    ]
    probabilities = torch.cat([p for p, _ in outputs]).cpu()
    segmentation = torch.cat([s for _, s in outputs]).cpu()
    return probabilities, segmentation


def _summary(
    rows: list[dict[str, Any]],
    engine: Engine,
    roi: RegionOfInterest | None,
    decision: AppliedDecisions,
    grouping: str,
) -> EvaluationSummary:
    summary = metrics_summary(rows, grouping)
    summary.thresholds = {**engine.manifest.thresholds, "classification": decision.threshold}
    summary.engine = describe(engine)
    summary.roi = roi.record() if roi is not None else None
    summary.decisions = decision
    return summary


def describe(engine: Engine) -> EngineDescription:
    return EngineDescription.of_manifest(vars(engine.manifest), str(engine.device))


def image_row(
    sample: SampleRef,
    probability: float,
    truth: np.ndarray | None,
    predicted: np.ndarray,
    judged_defective: bool,
) -> dict[str, Any]:
    """One image's scores: its masks (true and predicted, at its original size) and
    whether it was judged defective. Without a true mask (None: a defective image whose
    pixels are not labelled) it counts for the image decision only."""
    counts = np.zeros(len(PIXEL_COUNT_KEYS), int)
    mask_iou = boundary_iou = math.nan
    if truth is not None:
        counts = metrics.pixel_counts(truth, predicted)
        if truth.any():
            mask_iou = metrics.mask_iou(truth, predicted)
            boundary_iou = metrics.boundary_iou(truth, predicted)
    return {
        "id": readable_path(sample.id),
        "path": readable_path(sample.image_path),  # for people; names need not be UTF-8
        "path_bytes": path_bytes(sample.image_path),
        "is_defective": sample.is_defective,
        "probability": probability,
        "predicted_defective": judged_defective,
        "defect_type": sample.defect_type,
        "part": readable_path(sample.group),  # its images are judged together (part_scores)
        "mask_known": truth is not None,
        "mask_iou": mask_iou,
        "boundary_iou": boundary_iou,
        "true_defect_pixels": None if truth is None else int(truth.sum()),
        "predicted_defect_pixels": int(predicted.sum()),
        **dict(zip(PIXEL_COUNT_KEYS, counts.tolist(), strict=True)),
    }


def _judged_defective(decision: AppliedDecisions, probability: float, area: int) -> bool:
    """As a run judges the image: the probability against the threshold, combined with
    the mask's area by the rule (``decisions.Rule``)."""
    rule = Rule(decision.rule, decision.min_area)
    return bool(rule.defective(np.array([probability >= decision.threshold]), np.array([area]))[0])


def image_iou(row: dict[str, Any], kind: str, gated: bool) -> float:
    """One image's mask or boundary IoU (``kind``) counted over all images: a defect-free
    image scores 1 when nothing is predicted on it and 0 otherwise. ``gated``: the mask of
    an image judged defect-free counts as empty, as ``psicbatch run --masks gated`` writes
    it (a defective image judged defect-free then scores 0)."""
    if not row.get("mask_known", True):  # no true mask: not a mask score at all
        return math.nan
    kept = row["predicted_defective"] or not gated
    if not math.isnan(row[kind]):  # a defective image
        return row[kind] if kept else 0.0
    return 0.0 if kept and row["predicted_defect_pixels"] else 1.0


def metrics_summary(
    rows: list[dict[str, Any]], grouping: str = DATASET_GROUPS
) -> EvaluationSummary:
    """Dataset-level metrics from per-image rows (also used to pool folds); the decision
    over parts too where parts (made by ``grouping``) have several images.

    Mask and boundary mIoU: over the defective images (strict; what an overlay shows),
    over all images, and over all images with decision-gated masks (see ``image_iou``).
    """
    counts = np.array([[row[key] for key in PIXEL_COUNT_KEYS] for row in rows]).sum(axis=0)
    labels = np.array([row["is_defective"] for row in rows], dtype=bool)
    scores = np.array([row["probability"] for row in rows], dtype=float)
    decisions = np.array([row["predicted_defective"] for row in rows], dtype=bool)
    defective = [row for row in rows if not math.isnan(row["mask_iou"])]
    masked = [row for row in rows if row.get("mask_known", True)]
    readings = {
        f"{kind}_miou_{reading}": _mean(image_iou(row, f"{kind}_iou", gated) for row in masked)
        for reading, gated in (("all", False), ("gated", True))
        for kind in ("mask", "boundary")
    }
    return EvaluationSummary(
        images=len(rows),
        defective_images=int(labels.sum()),
        unmasked_defective=len(rows) - len(masked),
        defect_types=defect_type_scores(rows),
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
        parts=part_scores(rows, grouping),
    )


def defect_type_scores(rows: list[dict[str, Any]]) -> list[DefectTypeScores]:
    """Escapes and mask mIoU of each defect type a review named (none: an empty list)."""
    counted = escapes_by_type(
        [row.get("defect_type", "") for row in rows],
        [row["is_defective"] for row in rows],
        [row["predicted_defective"] for row in rows],
    )
    scores = []
    for kind in counted:
        masked = [
            row["mask_iou"]
            for row in rows
            if row["is_defective"]
            and row.get("defect_type", "") == kind.defect_type
            and not math.isnan(row["mask_iou"])
        ]
        scores.append(
            DefectTypeScores(**asdict(kind), with_masks=len(masked), mask_miou=_mean(masked))
        )
    return scores


def _mean(values: Any) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan
