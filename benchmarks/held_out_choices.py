"""The summary of ``benchmarks/held_out_choices.sh``: per rotation and variant, the
epochs kept, the thresholds and the model's scores on the part no step saw.

    python benchmarks/held_out_choices.py OUT_DIR [WHAT]   # OUT_DIR/choices.md, choices.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402

VARIANTS = ("last", "best", "thresholds", "best-thresholds")


def scores(run: Path) -> dict[str, object]:
    """What one model kept, chose and scored on the test part."""
    model = json.loads((run / "model.json").read_text())
    training = model["training"]
    test = json.loads((run / "test-metrics.json").read_text())
    decision = test["classification"]
    return {
        "options": (run / "options.txt").read_text().strip(),
        "kept": training.get("kept_epochs") or training["epochs"],
        "thresholds": model["thresholds"],
        "minutes": training["minutes"],
        "validation_minutes": training["validation_minutes"],
        "test_images": test["images"],
        "test_defective": test["defective_images"],
        "ap": decision["ap"],
        "auc": decision["auc"],
        "fp": decision["fp"],
        "fn": decision["fn"],
        "mask_miou": test["segmentation"]["mask_miou"],
    }


def main(out: Path, what: str) -> None:
    results = {
        folder.name: {
            "parts": (folder / "last" / "parts.txt").read_text().strip(),
            **{variant: scores(folder / variant) for variant in VARIANTS},
        }
        for folder in sorted(out.glob("rotation-*"))
    }
    rows = []
    for name, result in results.items():
        for variant in VARIANTS:
            got = result[variant]
            kept = ", ".join(str(epoch) for epoch in got["kept"].values())
            thresholds = "{classification:.3f} / {segmentation:.3f}".format(**got["thresholds"])
            rows.append(
                [name.replace("rotation-", ""), f"`{got['options']}`", kept, thresholds,
                 f"{100 * got['ap']:.2f}", f"{100 * got['auc']:.2f}", got["fp"], got["fn"],
                 f"{got['mask_miou']:.3f}"]
            )  # fmt: skip
    headers = ["rotation", "options", "epochs kept (steps 1, 2)", "thresholds (image / pixel)",
               "test AP", "test AUC", "FP", "FN", "mask mIoU"]  # fmt: skip
    facts = machine()
    minutes = [
        f"{result[variant]['minutes']} + {result[variant]['validation_minutes']}"
        for result in results.values()
        for variant in VARIANTS
    ]
    text = [
        f"# Choices on validation images: {facts['cpu']}, {facts['isa']}",
        "",
        f"{what}.",
        "",
        *(f"- {result['parts']}" for result in results.values()),
        "",
        "Every model trained with the defaults and `--validation` on the next part. Scores "
        "on the test part: AP and AUC of the image probabilities; false positives and "
        "negatives at the model's image threshold; mask mIoU over the defective test images "
        "at its pixel threshold.",
        "",
        *markdown_table(headers, rows),
        "",
        f"Minutes of training epochs + scoring them, per model: {', '.join(minutes)}.",
    ]
    (out / "choices.md").write_text("\n".join(text) + "\n")
    (out / "choices.json").write_text(
        json.dumps({"machine": facts, "rotations": results}, indent=1) + "\n"
    )
    print("\n".join(text))


if __name__ == "__main__":
    main(Path(sys.argv[1]), " ".join(sys.argv[2:]) or "KolektorSDD")
