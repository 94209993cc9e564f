"""The three readings of mask and boundary mIoU (defective images only, all images, all
images with decision-gated masks) for a committed cross-validation, from its per-image
predictions alone: no model is needed, so results predating those readings get them too.

Usage: python benchmarks/mask_readings.py benchmarks/results/kolektorsdd-cv3
Writes mask_readings.json and mask_readings.md into that folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.cv_report import cross_validation_tables  # noqa: E402
from psicbatch.evaluate import metrics_summary  # noqa: E402
from psicbatch.reports import READINGS, markdown_table  # noqa: E402


def main() -> None:
    folder = Path(sys.argv[1])
    rows = pq.read_table(folder / "predictions.parquet").to_pylist()
    folds = sorted({row["fold"] for row in rows})
    summaries = [metrics_summary([r for r in rows if r["fold"] == fold]) for fold in folds]
    table1 = cross_validation_tables(summaries)["table1"]
    readings = {
        label: {
            kind: table1[f"{kind}_miou" + (f"_{reading}" if reading else "")]
            for kind in ("mask", "boundary")
        }
        for label, reading in READINGS
    }
    (folder / "mask_readings.json").write_text(json.dumps(readings, indent=2) + "\n")
    lines = [
        f"# Mask and boundary mIoU, three readings ({len(folds)} folds, %)",
        "",
        "```",
        "python benchmarks/mask_readings.py " + " ".join(sys.argv[1:]),
        "```",
        "",
    ]
    lines += markdown_table(
        ["over", "Mask mIoU mean", "max", "min", "Boundary mIoU mean", "max", "min"],
        [
            [
                label,
                *(
                    f"{v[kind][s]:.2f}"
                    for kind in ("mask", "boundary")
                    for s in ("mean", "max", "min")
                ),
            ]
            for label, v in readings.items()
        ],
    )
    (folder / "mask_readings.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
