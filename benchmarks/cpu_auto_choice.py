"""Is every ``auto`` as fast as the fastest explicit choice on this machine? One run.

Three measurements, each against its alternatives minutes apart on the same machine:

1. Engines, engine-only at a run's batch (8) and at batch 1: torch fp32, torch bf16 (also
   where it is not native, to show what ``auto`` avoids), ONNX Runtime fp32 and OpenVINO
   fp32, for the bundled demo model (128x128) and the CPU recipe's network (width 0.5,
   704x256, untrained: cost does not depend on the weights). Against them: what ``auto``
   gives for a checkpoint (``run``/``eval``/``bench --model``: torch in ``cpu_auto``'s
   precision) and what ``build-engine``'s measured choice picks (``tuning.tune`` over
   ``cpu_candidates``, with the parity check off, since the width 0.5 network is untrained).
2. ``psicbatch run`` end to end on 1408x512 PNG files with the demo model: the default
   against every explicit ``--precision``.
3. ``psicbatch train`` for 1 + 1 epochs: the default against ``--precision fp32``.

Usage: python benchmarks/cpu_auto_choice.py OUT_DIR [--seconds 8] [--images 160]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.assets import demo_model_path  # noqa: E402
from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.checkpoint import save_checkpoint, untrained_checkpoint  # noqa: E402
from psicbatch.data.synth import generate  # noqa: E402
from psicbatch.engines.build import BuildOptions, build_engine  # noqa: E402
from psicbatch.engines.loading import load_engine  # noqa: E402
from psicbatch.engines.tuning import cpu_candidates, time_engine, tune  # noqa: E402
from psicbatch.hardware import cpu_precisions  # noqa: E402
from psicbatch.model import ModelConfig  # noqa: E402
from psicbatch.precision import cpu_auto  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402

CANDIDATES = [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32")]
CONSOLE = Path(sys.executable).parent / "psicbatch"


def engines_at(
    name: str, checkpoint: Path, size: tuple[int, int], work: Path, seconds: float
) -> list[dict[str, Any]]:
    """Every candidate engine-only at batches 8 and 1, then what each auto gives."""
    built = {}
    for backend, precision in CANDIDATES:
        options = BuildOptions(
            backend=backend,
            precision=precision,
            input_size=size,
            max_batch=8,
            check_parity=False,
            out=work / f"{name}-{backend}-{precision}",
        )
        built[backend, precision] = build_engine(checkpoint, options)[0]
    rows = []
    for batch in (8, 1):
        times = {
            key: time_engine(load_engine(folder, "cpu"), batch, size, seconds)
            for key, folder in built.items()
        }
        fastest = min(times, key=times.get)

        def measure(folder: Path, share: float, batch: int = batch) -> float:
            return time_engine(load_engine(folder, "cpu"), batch, size, min(share, seconds))

        tuned_trials, tuned = tune(
            cpu_candidates(calibrated=False),
            lambda c: built[c.backend, c.precision],
            measure,
            budget=len(CANDIDATES) * seconds,
        )
        tuned_key = next(k for k, folder in built.items() if folder == tuned)
        checkpoint_auto = ("torch", cpu_auto().precision)
        for label, key in (("checkpoint auto", checkpoint_auto), ("build-engine auto", tuned_key)):
            again = time_engine(load_engine(built[key], "cpu"), batch, size, seconds)
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "auto": label,
                    "picks": " ".join(key),
                    "ms_per_image": 1000 * again,
                    "fastest": " ".join(fastest),
                    "fastest_ms_per_image": 1000 * times[fastest],
                    "ratio_to_fastest": again / times[fastest],
                    "candidates_ms": {" ".join(k): 1000 * v for k, v in times.items()},
                    "tuning": [t.to_dict() for t in tuned_trials],
                }
            )
    return rows


def timed_command(*args: object) -> float:
    began = time.monotonic()
    subprocess.run([CONSOLE, *map(str, args)], check=True, capture_output=True)
    return time.monotonic() - began


def run_end_to_end(work: Path, count: int) -> list[dict[str, Any]]:
    """``psicbatch run`` on 1408x512 PNG files: the default and every explicit precision,
    two rounds in turn (the first round also warms the file cache), the faster of each."""
    generate(work / "ksdd-like", count, (1408, 512), defect_rate=0.2, seed=3)
    images = work / "ksdd-like" / "images"
    precisions = ("default", "fp32", "bf16")
    rounds: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(2):
        for precision in precisions:
            extra = [] if precision == "default" else ["--precision", precision]
            out = work / f"run-{precision}.parquet"
            rounds[precision].append(
                timed_command("run", images, "--out", out, "--overwrite", "-q", *extra)
            )
    return [
        {
            "precision": precision,
            "seconds": min(times),
            "rounds": times,
            "images_per_s": count / min(times),
        }
        for precision, times in rounds.items()
    ]


def train_default_vs_fp32(work: Path) -> list[dict[str, Any]]:
    generate(work / "train-data", 96, (128, 128), defect_rate=0.4, seed=4)
    rows = []
    for precision in ("default", "fp32"):
        extra = [] if precision == "default" else ["--precision", precision]
        seconds = timed_command(
            "train",
            work / "train-data",
            "--out",
            work / f"train-{precision}.pt",
            "--input-size",
            "128x128",
            "--seg-epochs",
            "1",
            "--cls-epochs",
            "1",
            "-q",
            *extra,
        )
        rows.append({"precision": precision, "seconds": seconds})
    return rows


def markdown(report: dict[str, Any], command: str) -> str:
    m = report["machine"]
    lines = [
        "# What `auto` picks on this CPU, against the fastest explicit choice",
        "",
        f"Machine: {m['cpu']} ({report['isa']}), {m['cores']} cores; torch {m['torch']}.",
        f"`auto` for torch on this CPU: {report['cpu_auto']}.",
        "",
        "```",
        command,
        "```",
        "",
        "## Engines (engine-only, ms per image)",
        "",
    ]
    candidates = [" ".join(c) for c in CANDIDATES]
    lines += markdown_table(
        ["model", "batch", "auto", "picks", "ms/image", "fastest", "ratio", *candidates],
        [
            [
                r["model"],
                r["batch"],
                r["auto"],
                r["picks"],
                f"{r['ms_per_image']:.1f}",
                r["fastest"],
                f"{r['ratio_to_fastest']:.2f}",
                *(f"{r['candidates_ms'][c]:.1f}" for c in candidates),
            ]
            for r in report["engines"]
        ],
    )
    lines += ["", "## `psicbatch run` on 1408x512 PNG files (demo model, whole command)", ""]
    lines += markdown_table(
        ["--precision", "seconds (faster of two rounds)", "rounds", "images/s"],
        [
            [
                r["precision"],
                f"{r['seconds']:.1f}",
                " / ".join(f"{t:.1f}" for t in r["rounds"]),
                f"{r['images_per_s']:.1f}",
            ]
            for r in report["run"]
        ],
    )
    lines += ["", "## `psicbatch train`, 1 + 1 epochs, 96 images at 128x128, width 0.25", ""]
    lines += markdown_table(
        ["--precision", "seconds"],
        [[r["precision"], f"{r['seconds']:.1f}"] for r in report["train"]],
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--images", type=int, default=160)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        recipe = work / "width-0.5.pt"
        save_checkpoint(untrained_checkpoint(ModelConfig(width=0.5), (704, 256), 0), recipe)
        engines = engines_at("demo 128x128", demo_model_path(), (128, 128), work, args.seconds)
        engines += engines_at("width 0.5 704x256", recipe, (704, 256), work, args.seconds)
        report = {
            "machine": machine(),
            "isa": cpu_precisions().describe(),
            "cpu_auto": cpu_auto().reason,
            "engines": engines,
            "run": run_end_to_end(work, args.images),
            "train": train_default_vs_fp32(work),
        }
    command = "python " + " ".join(sys.argv)
    (args.out / "auto-choice.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "auto-choice.md").write_text(markdown(report, command))
    print(markdown(report, command))


if __name__ == "__main__":
    main()
