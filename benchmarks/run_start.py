"""A run's own start with the paper's network: ``psicbatch run`` of one small image,
this checkout against another one, in fresh processes, alternating, on this machine.

    python benchmarks/run_start.py OUT_DIR --other CHECKOUT [--rounds 3] [--runs 5]

The checkpoint is the paper's network (width 1, untrained, 128 MB) at a 64x64 input, so
inference is a small part of each run: what is timed is reading the checkpoint, the
manifest, opening the engine, the results file. Each fresh process imports psicbatch's
command line first (not timed) and then runs ``--runs`` times in a row: the first run,
which imports what a run needs (torch among them), and the median of the others.
OUT_DIR gets ``run_start.json`` and ``run_start.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from revision import commit_of  # noqa: E402

from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402

# Run in the child, with the checkout measured first on its path.
MEASURE = """
import sys, time
from pathlib import Path
from click.testing import CliRunner
from psicbatch.cli import main
folder, model, out, runs = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
for number in range(runs):
    began = time.perf_counter()
    args = ["run", str(folder), "--model", model, "-o", str(out / f"r{number}.parquet"), "-q"]
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    print(time.perf_counter() - began)
"""


def seconds(checkout: Path, folder: Path, model: Path, out: Path, runs: int) -> list[float]:
    """Seconds of each run, in one fresh process with ``checkout``'s code."""
    out.mkdir(parents=True)
    finished = subprocess.run(
        [sys.executable, "-c", MEASURE, str(folder), str(model), str(out), str(runs)],
        env={**os.environ, "PYTHONPATH": str(checkout)},
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    return [float(line) for line in finished.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--other", type=Path, required=True, help="the checkout compared")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5, help="runs in each process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:  # the checkpoint: 128 MB
        measure(args, Path(temporary))


def measure(args: argparse.Namespace, work: Path) -> None:
    from PIL import Image

    from psicbatch.checkpoint import save_checkpoint, untrained_checkpoint
    from psicbatch.model import ModelConfig

    (work / "images").mkdir()
    Image.new("L", (64, 64), 128).save(work / "images" / "a.png")
    model = save_checkpoint(untrained_checkpoint(ModelConfig(), (64, 64)), work / "model.pt")
    checkouts = {"other": args.other.resolve(), "this": ROOT}
    taken: dict[str, list[list[float]]] = {"other": [], "this": []}
    for round_number in range(args.rounds):
        for side, checkout in checkouts.items():
            out = work / f"{side}-{round_number}"
            spent = seconds(checkout, work / "images", model, out, args.runs)
            taken[side].append(spent)
            print(side, " ".join(f"{s:.2f}" for s in spent), flush=True)
    facts = machine()
    commits = {side: commit_of(checkout) for side, checkout in checkouts.items()}
    record = {"machine": facts, "commits": commits, "model_bytes": model.stat().st_size}
    record |= {"seconds": taken}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run_start.json").write_text(json.dumps(record, indent=1) + "\n")
    rows = [
        [
            f"{side} ({commits[side]})",
            " / ".join(f"{spent[0]:.2f}" for spent in taken[side]),
            " / ".join(f"{statistics.median(spent[1:]):.2f}" for spent in taken[side]),
        ]
        for side in checkouts
    ]
    text = (
        f"# A run's start: {facts['cpu']}, {facts['isa']}, {facts['cpus_available']} CPUs\n\n"
        f"`psicbatch run` of one 64x64 PNG with the paper's network (untrained, "
        f"{model.stat().st_size / 1e6:.0f} MB), CPU, fp32; seconds per run, {args.rounds} "
        f"fresh processes per checkout, alternating, {args.runs} runs in each; the first "
        "imports what a run needs (torch among them).\n\n"
        + "\n".join(markdown_table(["checkout", "first run", "median of the later runs"], rows))
        + "\n"
    )
    (args.out / "run_start.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
