"""Loading a training set into memory (decoding, resizing, masks: ``load_into_memory``),
this checkout against another one, in fresh processes, alternating, on this machine.

    python benchmarks/loading.py OUT_DIR --data DATA --other CHECKOUT
        [--layout kolektorsdd] [--size 704x256] [--rounds 3]

Each round loads DATA once with each checkout's code (PYTHONPATH at the checkout) and
times the loading alone; OUT_DIR gets ``loading.json`` and ``loading.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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
from psicbatch.data.layouts import read_dataset
from psicbatch.data.memory import load_into_memory
samples = read_dataset(Path(sys.argv[1]), sys.argv[2])
height, width = (int(side) for side in sys.argv[3].split("x"))
began = time.perf_counter()
load_into_memory(samples, (height, width), 1)
print(len(samples), time.perf_counter() - began)
"""


def seconds(checkout: Path, data: Path, layout: str, size: str) -> tuple[int, float]:
    """Images loaded and seconds taken by ``checkout``'s code, in a fresh process."""
    environment = {**os.environ, "PYTHONPATH": str(checkout)}
    finished = subprocess.run(
        [sys.executable, "-c", MEASURE, str(data), layout, size],
        env=environment,
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    count, taken = finished.stdout.split()
    return int(count), float(taken)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--other", type=Path, required=True, help="the checkout compared")
    parser.add_argument("--layout", default="kolektorsdd")
    parser.add_argument("--size", default="704x256", help="HxW, the network's input size")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    checkouts = {"other": args.other.resolve(), "this": ROOT}
    taken: dict[str, list[float]] = {"other": [], "this": []}
    for _ in range(args.rounds):
        for side, checkout in checkouts.items():
            count, spent = seconds(checkout, args.data.resolve(), args.layout, args.size)
            taken[side].append(spent)
            print(side, count, f"{spent:.2f} s", flush=True)
    facts = machine()
    commits = {side: commit_of(checkout) for side, checkout in checkouts.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"machine": facts, "data": str(args.data), "images": count, "size": args.size}
    record |= {"commits": commits, "seconds": taken}
    (args.out / "loading.json").write_text(json.dumps(record, indent=1) + "\n")
    rows = [
        [f"{side} ({commits[side]})", " / ".join(f"{s:.2f}" for s in taken[side])]
        for side in checkouts
    ]
    text = (
        f"# Loading a training set: {facts['cpu']}, {facts['isa']}, "
        f"{facts['cpus_available']} CPUs\n\n{count} images of {args.data} resized to "
        f"{args.size} with their masks (`load_into_memory`); seconds, {args.rounds} rounds, "
        "alternating, each in a fresh process.\n\n"
        + "\n".join(markdown_table(["checkout", "seconds"], rows))
        + "\n"
    )
    (args.out / "loading.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
