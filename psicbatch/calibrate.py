"""``psicbatch calibrate``: decisions chosen from stored predictions, without inference.

Two kinds of input: the predictions of ``psicbatch eval`` or ``cv`` (labels included),
or the results of ``psicbatch run`` (a results file or a --watch folder) joined with the
labels of a dataset as ``eval RESULTS --labels`` joins them (recalibration: the
probabilities and mask areas already computed are reused, so a new target or rule costs
seconds, not another pass over the images).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from psicbatch.data.combined import WHOLE, part_text
from psicbatch.data.splits import pattern_groups
from psicbatch.decisions import (
    CLASSIFIER,
    NoRates,
    OperatingPoint,
    Rule,
    choose,
    operating_points,
    point_at,
)
from psicbatch.errors import PsicbatchError
from psicbatch.part_scores import PartIndex
from psicbatch.paths import readable_path, row_file
from psicbatch.run.labelled_results import labelled_results, regrouped
from psicbatch.run.output_guard import is_results_file
from psicbatch.run.results import read_results_table
from psicbatch.scores import named_types


@dataclass
class Validation:
    """Labelled validation images as calibration needs them."""

    paths: list[str]  # for people
    files: list[Path]  # exactly, for reading them again
    probabilities: np.ndarray
    labels: np.ndarray
    areas: np.ndarray  # predicted defect pixels (masks of every image, not gated)
    folds: np.ndarray | None  # cv predictions: each image's fold
    source: str
    defect_types: list[str]  # as a review sorted the images ("" where it named none)
    parts: list[str] | None = None  # each image's part; None where not recorded


@dataclass
class StoredPredictions:
    """Predictions already computed, read once with the record that describes them: eval
    or cv predictions (labelled in their rows; the record is eval's ``metrics.json``
    beside them, or cv's pooled summary in ``cv.json``, where there is one) or a run's
    results (a results file or a --watch folder; the record is the run's)."""

    path: Path
    table: pa.Table
    record: dict[str, Any]
    run_results: bool

    @classmethod
    def read(cls, path: Path) -> StoredPredictions:
        if path.is_dir() or is_results_file(path):  # without masks: a day of a watch holds many
            table, record = read_results_table(path, [*RESULT_COLUMNS, "file_size"])
            return cls(path, table, record, True)
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as error:
            raise PsicbatchError(f"{path}: not a readable Parquet file ({error})") from None
        return cls(path, table, _record_beside(path), False)

    @property
    def masks_gated(self) -> bool:
        """Whether the masks were gated by the image decision: run results say so in their
        record, eval predictions of such results in theirs; without a record, masks of
        every image, as eval scores them."""
        if self.run_results:
            return self.record.get("masks") == "gated"
        return bool(self.record.get("gated_masks"))


def _record_beside(predictions: Path) -> dict[str, Any]:
    """The summary eval (``metrics.json``) or cv (``cv.json``, pooled over its folds)
    writes beside its predictions; empty where there is none or it cannot be read."""
    for name, key in (("metrics.json", None), ("cv.json", "pooled")):
        try:
            record = json.loads((predictions.parent / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and key is not None:
            record = record.get(key)
        return record if isinstance(record, dict) else {}
    return {}


# What calibrating reads of a run's results (and the file size that finds a labelled
# image moved after its inspection: ``labelled_results``).
RESULT_COLUMNS = ("path", "path_bytes", "probability", "mask_area", "error")


def read_validation(
    stored: StoredPredictions,
    labels: Path | None = None,
    layout: str = "folder",
    rule: Rule = CLASSIFIER,
    split: str = WHOLE,
    group_by: str | None = None,
) -> Validation:
    """Eval/cv predictions (``labels`` None) or run results joined with ``labels`` (its
    ``split`` part); an area ``rule`` is refused on masks gated by the image decision.
    ``group_by``: the pattern whose match in an image's id names its part (otherwise the
    part the predictions record, or the dataset's group)."""
    path = readable_path(stored.path)
    if rule.name != "classifier" and stored.masks_gated:
        raise PsicbatchError(
            f"{path}: its masks are gated by the image decision (run's default), so "
            "images judged good have no mask area; rerun with --masks all to calibrate an "
            "area rule"
        )
    if labels is not None and not stored.run_results:
        raise PsicbatchError(
            f"{path}: eval or cv predictions hold their labels; give them without --labels"
        )
    if labels is None and split != WHOLE:
        raise PsicbatchError(
            f"{path}: --split {split} picks a part of a labelled dataset; eval or cv "
            "predictions hold the images they were made on"
        )
    if labels is None:
        needed = {"path", "probability", "is_defective", "predicted_defect_pixels"}
        if not needed <= set(stored.table.column_names):
            raise PsicbatchError(
                f"{path}: not eval or cv predictions (it lacks "
                f"{', '.join(sorted(needed - set(stored.table.column_names)))}); for run results "
                "give the labelled dataset with --labels DATA"
            )
        rows = stored.table.to_pylist()
        if group_by is not None:
            ids = [row.get("id") or row["path"] for row in rows]  # early rows: paths only
            names = pattern_groups(ids, group_by)
            rows = [
                {**row, "part": name or row.get("part") or image}  # unmatched: as they were
                for row, name, image in zip(rows, names, ids, strict=True)
            ]
        return scored_rows(rows, f"predictions {path}")
    found = labelled_results(stored.path, stored.table, labels, layout, RESULT_COLUMNS, split)
    used = regrouped(found.usable, group_by)
    return Validation(
        [row["path"] for _, row in used],
        [sample.image_path for sample, _ in used],
        np.array([row["probability"] for _, row in used], dtype=float),
        np.array([sample.is_defective for sample, _ in used], dtype=bool),
        np.array([row["mask_area"] for _, row in used], dtype=np.int64),
        None,
        f"run results {path} labelled by {readable_path(labels)}{part_text(split)}: "
        f"{found.counts('used')}",
        [sample.defect_type for sample, _ in used],
        [readable_path(sample.group) for sample, _ in used],
    )


def scored_rows(rows: list[dict[str, Any]], source: str) -> Validation:
    """The per-image rows of ``evaluate`` (as eval and cv store them)."""
    return Validation(
        [row["path"] for row in rows],
        [row_file(row) for row in rows],
        np.array([row["probability"] for row in rows], dtype=float),
        np.array([row["is_defective"] for row in rows], dtype=bool),
        np.array([row["predicted_defect_pixels"] for row in rows], dtype=np.int64),
        np.array([row["fold"] for row in rows]) if rows and "fold" in rows[0] else None,
        source,
        [row.get("defect_type", "") for row in rows],  # predictions before types: none
        _recorded_parts(rows),
    )


def _recorded_parts(rows: list[dict[str, Any]]) -> list[str] | None:
    """Each row's part, or None where rows predate the ``part`` column."""
    parts = [row.get("part") for row in rows]
    return None if any(part is None for part in parts) else [str(part) for part in parts]


@dataclass
class Calibration:
    chosen: OperatingPoint
    points: list[OperatingPoint]
    per_fold: dict[int, OperatingPoint]  # cv predictions: each fold's own operating point
    nearest: list[dict[str, Any]]  # the images closest to the threshold, on either side
    in_images: OperatingPoint | None = None  # decisions chosen for parts, counted in images


def calibrate(
    data: Validation,
    rule: Rule,
    max_escape_rate: float | None,
    max_false_reject_rate: float | None,
    type_limits: dict[str, float] | None = None,
    nearest: int = 5,
    by_part: bool = False,
) -> Calibration:
    """The operating point for the target on the validation images (and each cv fold's
    own); ``type_limits``: the most escapes of a named defect type, as a share of its
    images. ``by_part``: escapes and false rejects counted in parts (``part_scores``)."""
    limits = type_limits or {}
    check_type_limits(limits, data.defect_types, data.labels.tolist(), data.source)
    parts = checked_parts(data) if by_part else None
    target = (max_escape_rate, max_false_reject_rate, limits)
    points = operating_points(
        data.probabilities, data.labels, data.areas, rule, data.defect_types, parts
    )
    chosen = choose(points, *target)
    per_fold = _per_fold(data, rule, parts, target) if data.folds is not None else {}
    order = np.argsort(np.abs(data.probabilities - chosen.threshold))[: nearest * 2]
    closest = [
        {
            "path": data.paths[i],
            "file": data.files[i],
            "probability": float(data.probabilities[i]),
            "defective": bool(data.labels[i]),
            "defect_type": data.defect_types[i],
            "mask_area": int(data.areas[i]),
        }
        for i in order
    ]
    in_images = None
    if parts is not None:
        in_images = point_at(chosen.threshold, data.probabilities, data.labels, data.areas, rule)
    return Calibration(chosen, points, per_fold, closest, in_images)


def _per_fold(
    data: Validation, rule: Rule, parts: list[str] | None, target: tuple[Any, ...]
) -> dict[int, OperatingPoint]:
    """Each cv fold's own operating point for the target; a fold whose test images (or
    parts) are all of one kind has none."""
    assert data.folds is not None
    per_fold = {}
    for fold in sorted(set(data.folds.tolist())):
        inside = data.folds == fold
        kept = np.flatnonzero(inside)
        try:
            points = operating_points(
                data.probabilities[inside],
                data.labels[inside],
                data.areas[inside],
                rule,
                [data.defect_types[i] for i in kept],
                None if parts is None else [parts[i] for i in kept],
            )
        except NoRates:
            continue
        per_fold[int(fold)] = choose(points, *target)
    return per_fold


def checked_parts(data: Validation) -> list[str]:
    """The images' parts, for decisions counted in parts; refused in one line where they
    are not recorded or where every part is one image."""
    if data.parts is None:
        raise PsicbatchError(
            f"{data.source}: these predictions record no parts (made before they were "
            "recorded); give --group-by REGEX, or score the dataset again"
        )
    if not PartIndex.of(data.parts).joins_images:
        raise PsicbatchError(
            f"{data.source}: every part is one image, so parts decide as images do; give "
            "--group-by REGEX to name the images of one part"
        )
    return data.parts


def check_type_limits(
    limits: dict[str, float], types: list[str], defective: list[bool], where: str
) -> None:
    """Limits only for defect types the validation images have: a misspelt type would
    otherwise be silently ignored."""
    known = named_types(types, defective)
    unknown = sorted(set(limits) - set(known) - {""})
    if not unknown:
        return
    have = (
        f"its types are {', '.join(kind for kind in known if kind)}"
        if any(known)
        else "it names no defect types (subfolders of defective/ in the classes layout)"
    )
    raise PsicbatchError(f"{where}: no defective image of type {', '.join(unknown)}; {have}")
