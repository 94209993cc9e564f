"""The runs of ``benchmarks/few_masks.sh`` side by side, as a markdown table.

    python benchmarks/few_masks_summary.py OUT_DIR > OUT_DIR/summary.md

Mask scores are compared on the same images: those whose masks every run knew (the
fewest-masks run's), as well as each run's own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

RUNS = ("all", "half", "quarter")


def main(out: Path) -> None:
    rows = {run: pq.read_table(out / run / "predictions.parquet").to_pylist() for run in RUNS}
    records = {run: json.loads((out / run / "cv.json").read_text()) for run in RUNS}
    known_by_all = set.intersection(
        *({r["path"] for r in rows[run] if r["is_defective"] and r["mask_known"]} for run in RUNS)
    )
    table = [
        "| | " + " | ".join(RUNS) + " |",
        "| --- |" + " --- |" * len(RUNS),
        _row("defective images with a mask", rows, lambda r: str(_masked(r))),
        _row(
            f"Mask mIoU on the {len(known_by_all)} defective images every run has masks of",
            rows,
            lambda r: _miou([x for x in r if x["path"] in known_by_all]),
        ),
        _row("Mask mIoU on the run's own masked images", rows, lambda r: _miou(r)),
        "| AUC | "
        + " | ".join(f"{records[run]['tables']['table3']['auc']:.2f}" for run in RUNS)
        + " |",
        "| mAP (folds' AP) | "
        + " | ".join(f"{records[run]['tables']['table3']['ap']:.2f}" for run in RUNS)
        + " |",
        "| FP, FN over all images | "
        + " | ".join(
            f"{records[run]['tables']['table3']['fp']}, {records[run]['tables']['table3']['fn']}"
            for run in RUNS
        )
        + " |",
        "| training minutes per fold | "
        + " | ".join(
            "–".join(
                f"{m:.1f}" for m in _extremes(f["train_minutes"] for f in records[run]["folds"])
            )
            for run in RUNS
        )
        + " |",
    ]
    print("\n".join(table))


def _row(label: str, rows: dict, cell) -> str:
    return f"| {label} | " + " | ".join(cell(rows[run]) for run in RUNS) + " |"


def _masked(rows: list[dict]) -> int:
    return sum(r["is_defective"] and r["mask_known"] for r in rows)


def _miou(rows: list[dict]) -> str:
    values = [r["mask_iou"] for r in rows if r["is_defective"] and r["mask_known"]]
    return f"{100 * np.mean(values):.2f}" if values else "n/a"


def _extremes(values) -> tuple[float, float]:
    values = list(values)
    return min(values), max(values)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
