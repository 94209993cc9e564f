"""One table for the mask-quality study: each variant's fold-1 results next to the first
recipe's fold 1 (results/kolektorsdd-cv3) and the adopted recipe's
(results/kolektorsdd-cv3-width0.5).

Usage: python benchmarks/mask_study_summary.py   (writes results/mask-study/summary.md)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow.parquet as pq  # noqa: E402

from psicbatch.evaluate import metrics_summary  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SEGMENTATION = ("mask_miou", "mask_miou_all", "mask_miou_gated")


def fold_one(folder: Path) -> dict:
    """Fold 1's record, its metrics recomputed from its per-image predictions (so runs
    that predate a metric get it too)."""
    fold = next(f for f in json.loads((folder / "cv.json").read_text())["folds"] if f["fold"] == 1)
    rows = [r for r in pq.read_table(folder / "predictions.parquet").to_pylist() if r["fold"] == 1]
    thresholds = fold["summary"]["thresholds"]
    fold["summary"] = metrics_summary(rows)
    fold["summary"].thresholds = thresholds
    return fold


def row(name: str, fold: dict) -> list[str]:
    summary = fold["summary"]
    segmentation, classification = summary.segmentation, summary.classification
    readings = [f"{100 * getattr(segmentation, key):.2f}" for key in SEGMENTATION]
    return [
        name,
        f"{summary.thresholds['segmentation']:.4f}",
        *readings,
        f"{100 * classification.ap:.2f}",
        str(classification.fn),
        str(classification.fp),
        f"{fold['train_minutes']:.1f}",
    ]


def main() -> None:
    rows = [
        row(
            "first recipe, width 0.25 (its 3-fold run, fold 1)",
            fold_one(RESULTS / "kolektorsdd-cv3"),
        ),
        row(
            "width 0.5 + pixel-threshold iou (its 3-fold run, fold 1)",
            fold_one(RESULTS / "kolektorsdd-cv3-width0.5"),
        ),
    ]
    for folder in sorted((RESULTS / "mask-study").iterdir()):
        if (folder / "cv.json").exists():
            rows.append(row(folder.name, fold_one(folder)))
    header = [
        "variant (fold 1 of 3)",
        "pixel threshold",
        "Mask mIoU, defective only",
        "all images",
        "gated",
        "AP",
        "FN",
        "FP",
        "training (min)",
    ]
    lines = [
        "# Mask-quality study on KolektorSDD, fold 1",
        "",
        "```",
        "benchmarks/mask_study.sh VARIANT ...",
        "python benchmarks/mask_study_summary.py",
        "```",
        "",
    ]
    lines += markdown_table(header, rows)
    out = RESULTS / "mask-study" / "summary.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
