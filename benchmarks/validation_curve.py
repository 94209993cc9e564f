"""A trained model's losses by epoch beside its scores on held-out images
(``train --validation``): where the held-out loss stopped falling, and whether the
default epoch counts go past it.

    python benchmarks/validation_curve.py MODEL OUT_DIR [WHAT]   # curves.png, curves.md

WHAT says in words what was trained on and held out (the folders may be temporary).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.checkpoint import load_checkpoint  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402
from psicbatch.validation import best_epochs  # noqa: E402


def main(model: Path, out: Path, what: str) -> None:
    training = load_checkpoint(model).training
    losses, held_out = training["loss_history"], training["validation_history"]
    out.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, len(losses), figsize=(5 * len(losses), 3.4), dpi=100)
    axes = axes if len(losses) > 1 else [axes]
    for axis, (phase, values) in zip(axes, losses.items(), strict=True):
        epochs = range(1, len(values) + 1)
        axis.plot(epochs, values, label="training loss", color="#4063a0")
        axis.plot(epochs, held_out[phase]["loss"], label="held-out loss", color="#c03030")
        axis.set(title=phase, xlabel="epoch", ylabel="loss")
        if "ap" in held_out[phase]:
            ap = axis.twinx()
            ap.plot(epochs, [100 * v for v in held_out[phase]["ap"]], color="#30a050",
                    linestyle="--", label="held-out AP")  # fmt: skip
            ap.set(ylabel="AP (%)")
            ap.legend(loc="center right", fontsize="small")
        axis.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(out / "curves.png")
    facts = machine()
    rows = []
    for phase, values in losses.items():
        for epoch, loss in enumerate(values, start=1):
            scores = held_out[phase]
            ap = f"{100 * scores['ap'][epoch - 1]:.2f}" if "ap" in scores else ""
            rows.append([phase, epoch, f"{loss:.4f}", f"{scores['loss'][epoch - 1]:.4f}", ap])
    text = [
        f"# Held-out scores by epoch: {facts['cpu']}, {facts['isa']}",
        "",
        f"{what}: trained on {training['dataset']['images']} images, "
        f"{training['validation']['images']} held out "
        f"({training['validation']['defective']} of them defective); "
        f"{training['train_seconds'] / 60:.1f} minutes of training epochs, "
        f"{training['validation_seconds'] / 60:.1f} of scoring them on the held-out images.",
        "",
        *(f"- {line}" for line in best_epochs(held_out)),
        "",
        "![curves](curves.png)",
        "",
        *markdown_table(["phase", "epoch", "training loss", "held-out loss", "held-out AP"], rows),
    ]
    (out / "curves.md").write_text("\n".join(text) + "\n")
    kept = ("loss_history", "validation_history", "validation", "dataset", "options")
    record = {"machine": facts, "training": {key: training[key] for key in kept}}
    record["training"].update(
        {key: training[key] for key in ("train_seconds", "validation_seconds")}
    )
    (out / "curves.json").write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(text[:6]))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), " ".join(sys.argv[3:]) or "A model")
