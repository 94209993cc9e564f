"""``psicbatch calibrate``: decisions chosen from stored predictions, without inference.

Two kinds of input, both Parquet: the predictions of ``psicbatch eval`` or ``cv``
(labels included), or the results of ``psicbatch run`` joined with the labels of a
dataset (recalibration: the probabilities and mask areas already computed are reused, so
a new target or rule costs seconds, not another pass over the images).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from psicbatch.data.layouts import read_dataset
from psicbatch.decisions import CLASSIFIER, OperatingPoint, Rule, choose, operating_points
from psicbatch.errors import PsicbatchError
from psicbatch.paths import path_bytes, row_file


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


def read_validation(
    predictions: Path, labels: Path | None = None, layout: str = "folder", rule: Rule = CLASSIFIER
) -> Validation:
    """Eval/cv predictions (``labels`` None) or run results joined with ``labels``; an
    area ``rule`` is refused on masks gated by the image decision."""
    try:
        table = pq.read_table(predictions)
    except (OSError, ValueError) as error:
        raise PsicbatchError(f"{predictions}: not a readable Parquet file ({error})") from None
    if rule.name != "classifier" and _masks_gated(predictions, labels is not None):
        raise PsicbatchError(
            f"{predictions}: its masks are gated by the image decision (run's default), so "
            "images judged good have no mask area; rerun with --masks all to calibrate an "
            "area rule"
        )
    columns = set(table.column_names)
    if labels is None:
        needed = {"path", "probability", "is_defective", "predicted_defect_pixels"}
        if not needed <= columns:
            raise PsicbatchError(
                f"{predictions}: not eval or cv predictions (it lacks "
                f"{', '.join(sorted(needed - columns))}); for the results of psicbatch run, "
                "give the labelled dataset with --labels DATA"
            )
        return scored_rows(table.to_pylist(), f"predictions {predictions}")
    used = [c for c in ("path", "path_bytes", "probability", "mask_area", "error") if c in columns]
    return _joined_with_labels(predictions, table.select(used).to_pylist(), labels, layout)


def _masks_gated(predictions: Path, run_results: bool) -> bool:
    """Whether the masks behind stored predictions were gated by the image decision: run
    results say so in their metadata, eval predictions of such results in the record
    beside them (``metrics.json``)."""
    from psicbatch.run.output import read_metadata

    if run_results:
        return read_metadata(predictions).get("masks") == "gated"
    try:
        record = json.loads((predictions.parent / "metrics.json").read_text())
        return bool(record.get("gated_masks"))
    except (OSError, ValueError, AttributeError):
        return False  # no readable record: masks of every image, as eval scores them


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
    )


def _joined_with_labels(
    results: Path, rows: list[dict[str, Any]], labels: Path, layout: str
) -> Validation:
    """Run results (rows with errors left out) labelled from the dataset's layout."""
    samples = read_dataset(labels, layout)
    truth = {path_bytes(s.image_path.resolve()): s.is_defective for s in samples}

    def key(row: dict[str, Any]) -> bytes:
        return path_bytes(row_file(row).resolve())

    kept = [row for row in rows if row.get("error") is None]
    missing = [row["path"] for row in kept if key(row) not in truth]
    if missing:
        raise PsicbatchError(
            f"{results}: {len(missing)} result(s) are not images of {labels}, e.g. {missing[0]}"
        )
    if not kept:
        raise PsicbatchError(f"{results}: no result without an error to calibrate on")
    return Validation(
        [row["path"] for row in kept],
        [row_file(row) for row in kept],
        np.array([row["probability"] for row in kept], dtype=float),
        np.array([truth[key(row)] for row in kept], dtype=bool),
        np.array([row["mask_area"] for row in kept], dtype=np.int64),
        None,
        f"run results {results} labelled by {labels}",
    )


@dataclass
class Calibration:
    chosen: OperatingPoint
    points: list[OperatingPoint]
    per_fold: dict[int, OperatingPoint]  # cv predictions: each fold's own operating point
    nearest: list[dict[str, Any]]  # the images closest to the threshold, on either side


def calibrate(
    data: Validation,
    rule: Rule,
    max_escape_rate: float | None,
    max_false_reject_rate: float | None,
    nearest: int = 5,
) -> Calibration:
    points = operating_points(data.probabilities, data.labels, data.areas, rule)
    chosen = choose(points, max_escape_rate, max_false_reject_rate)
    per_fold = {}
    if data.folds is not None:
        for fold in sorted(set(data.folds.tolist())):
            inside = data.folds == fold
            fold_points = operating_points(
                data.probabilities[inside], data.labels[inside], data.areas[inside], rule
            )
            per_fold[int(fold)] = choose(fold_points, max_escape_rate, max_false_reject_rate)
    order = np.argsort(np.abs(data.probabilities - chosen.threshold))[: nearest * 2]
    closest = [
        {
            "path": data.paths[i],
            "file": data.files[i],
            "probability": float(data.probabilities[i]),
            "defective": bool(data.labels[i]),
            "mask_area": int(data.areas[i]),
        }
        for i in order
    ]
    return Calibration(chosen, points, per_fold, closest)
