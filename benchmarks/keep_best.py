"""The summary of ``benchmarks/keep_best.sh``: per rotation, the epochs ``--keep best``
kept and both models' scores on the part no step saw.

    python benchmarks/keep_best.py OUT_DIR [WHAT]   # OUT_DIR/keep-best.md, keep-best.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402

KEEPS = ("last", "best")


def scores(run: Path) -> dict[str, object]:
    """What one model kept and scored on the test part."""
    model = json.loads((run / "model.json").read_text())["training"]
    test = json.loads((run / "test-metrics.json").read_text())
    decision = test["classification"]
    return {
        "kept": model.get("kept_epochs") or model["epochs"],
        "minutes": model["minutes"],
        "validation_minutes": model["validation_minutes"],
        "test_images": test["images"],
        "test_defective": test["defective_images"],
        "ap": decision["ap"],
        "auc": decision["auc"],
        "fp": decision["fp"],
        "fn": decision["fn"],
        "mask_miou": test["segmentation"]["mask_miou"],
        "thresholds": test["thresholds"],
    }


def main(out: Path, what: str) -> None:
    rotations = sorted(out.glob("rotation-*"))
    results = {
        folder.name: {
            "parts": (folder / "last" / "parts.txt").read_text().strip(),
            **{keep: scores(folder / keep) for keep in KEEPS},
        }
        for folder in rotations
    }
    rows = []
    for name, result in results.items():
        for keep in KEEPS:
            got = result[keep]
            kept = ", ".join(f"{phase} {epoch}" for phase, epoch in got["kept"].items())
            rows.append(
                [name.replace("rotation-", ""), keep, kept, f"{100 * got['ap']:.2f}",
                 f"{100 * got['auc']:.2f}", got["fp"], got["fn"], f"{got['mask_miou']:.3f}",
                 f"{got['minutes']} + {got['validation_minutes']}"]
            )  # fmt: skip
    facts = machine()
    text = [
        f"# Last epoch or best on validation images: {facts['cpu']}, {facts['isa']}",
        "",
        f"{what}.",
        "",
        *(f"- {result['parts']}" for result in results.values()),
        "",
        "Scores on the test part (AP and AUC of the image probabilities; false positives "
        "and negatives at the threshold chosen on the training images; mask mIoU over the "
        "defective test images):",
        "",
        *markdown_table(
            [
                "rotation",
                "--keep",
                "epochs kept",
                "test AP",
                "test AUC",
                "FP",
                "FN",
                "mask mIoU",
                "minutes (training + scoring epochs)",
            ],
            rows,
        ),
    ]
    (out / "keep-best.md").write_text("\n".join(text) + "\n")
    (out / "keep-best.json").write_text(
        json.dumps({"machine": facts, "rotations": results}, indent=1) + "\n"
    )
    print("\n".join(text))


if __name__ == "__main__":
    main(Path(sys.argv[1]), " ".join(sys.argv[2:]) or "KolektorSDD")
