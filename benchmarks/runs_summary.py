"""Runs trained and scored on the same folds, side by side, as a markdown table: those of
``benchmarks/few_masks.sh`` (and ``few_masks_dropped.sh``, where they were made) by
default, or the runs named (``benchmarks/fine_tuning.sh``'s).

    python benchmarks/runs_summary.py OUT_DIR [RUN ...] > OUT_DIR/summary.md

A run is a ``psicbatch cv`` folder, or one of ``foldN`` folders, each holding its model's
``model.json`` (``psicbatch info --json``) and its test set's ``evaluation/``.

Mask scores are compared on the same images, those whose masks every run knew (the
fewest-masks run's), and on each run's own; image scores as cv reports them (the mean
of the folds' AUC and AP; FP and FN summed).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from psicbatch.cv_report import cross_validation_tables
from psicbatch.scores import EvaluationSummary

RUNS = ("all", "half", "half-dropped", "quarter", "quarter-dropped")


@dataclass
class Run:
    name: str
    rows: list[dict[str, Any]]  # every test image's row, keyed below by file name
    folds: list[EvaluationSummary]
    minutes: list[float]  # training time of each fold

    @classmethod
    def read(cls, folder: Path) -> Run:
        if (folder / "cv.json").is_file():  # a cross-validation
            record = json.loads((folder / "cv.json").read_text())
            return cls(
                folder.name,
                pq.read_table(folder / "predictions.parquet").to_pylist(),
                [EvaluationSummary.from_dict(fold["summary"]) for fold in record["folds"]],
                [fold["train_minutes"] for fold in record["folds"]],
            )
        folds = sorted(folder.glob("fold*"))  # trained and evaluated fold by fold
        return cls(
            folder.name,
            [
                row
                for fold in folds
                for row in pq.read_table(fold / "evaluation" / "predictions.parquet").to_pylist()
            ],
            [
                EvaluationSummary.from_dict(
                    json.loads((fold / "evaluation" / "metrics.json").read_text())
                )
                for fold in folds
            ],
            [
                json.loads((fold / "model.json").read_text())["training"]["minutes"]
                for fold in folds
            ],
        )

    def masked(self) -> set[str]:
        return {_image_id(r) for r in self.rows if r["is_defective"] and r["mask_known"]}

    def miou(self, names: set[str] | None = None) -> str:
        values = [
            r["mask_iou"]
            for r in self.rows
            if r["is_defective"] and r["mask_known"] and (names is None or _image_id(r) in names)
        ]
        return f"{100 * np.mean(values):.2f}" if values else "n/a"


def _image_id(row: dict[str, Any]) -> str:
    """The image's id in its dataset (its path there without the extension), the same
    in every run's test set."""
    return str(row["id"])


def main(out: Path, names: list[str]) -> None:
    runs = [Run.read(out / name) for name in names or RUNS if (out / name).is_dir()]
    tables = {run.name: cross_validation_tables(run.folds)["table3"] for run in runs}
    shared = set.intersection(*(run.masked() for run in runs))
    lines = [
        "| | " + " | ".join(run.name for run in runs) + " |",
        "| --- |" + " --- |" * len(runs),
        _row("test images", runs, lambda run: str(len(run.rows))),
        _row("defective test images with a mask", runs, lambda run: str(len(run.masked()))),
        _row(
            f"Mask mIoU on the {len(shared)} defective images every run has masks of",
            runs,
            lambda run: run.miou(shared),
        ),
        _row("Mask mIoU on the run's own masked test images", runs, lambda run: run.miou()),
        _row("AUC (mean of folds)", runs, lambda run: f"{tables[run.name]['auc']:.2f}"),
        _row("mAP (mean of folds' AP)", runs, lambda run: f"{tables[run.name]['ap']:.2f}"),
        _row(
            "FP, FN over the test images",
            runs,
            lambda run: f"{tables[run.name]['fp']}, {tables[run.name]['fn']}",
        ),
        _row(
            "FN per fold",
            runs,
            lambda run: ", ".join(str(fold.classification.fn) for fold in run.folds),
        ),
        _row(
            "training minutes per fold",
            runs,
            lambda run: f"{min(run.minutes):.1f}–{max(run.minutes):.1f}",
        ),
    ]
    print("\n".join(lines))


def _row(label: str, runs: list[Run], cell: Any) -> str:
    return f"| {label} | " + " | ".join(cell(run) for run in runs) + " |"


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
