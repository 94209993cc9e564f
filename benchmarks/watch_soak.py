"""Resident memory of a long ``psicbatch run --watch``, as files keep arriving.

A watch runs for days on a line. Its memory must follow the files in flight, not how
many it has inspected: this feeds it ``--files`` files (copies of a few generated
1408x512 PNGs, each completed by a ``.done`` marker), a batch at a time and never more
than a few batches ahead of its results, and samples its resident memory (VmRSS) by the
number of results written. Growth between the first and the last quarter of the files
is the figure to read.

Usage: python benchmarks/watch_soak.py OUT_DIR [--files 4000] [--model demo]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.data.synth import generate  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402

SIZE = (1408, 512)
DISTINCT = 16  # generated images, copied under new names
BATCH = 8  # files fed at once, a watch batch's most
AHEAD = 4  # batches fed beyond the results written
QUARTERS = 4


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def rows_written(results: Path) -> int:
    """Rows in the watch's finished parts (temporary names are not yet parts)."""
    return sum(pq.read_metadata(part).num_rows for part in results.rglob("*.parquet"))


def soak(folder: Path, count: int, model: str | None) -> list[tuple[int, float]]:
    """Feed ``count`` files to a watch; (rows written, resident MiB) samples."""
    sources = sorted(generate(folder / "generated", DISTINCT, SIZE, seed=7))
    watched, results = folder / "watched", folder / "results"
    watched.mkdir()
    command = [sys.executable, "-m", "psicbatch", "run", "--watch", str(watched)]
    command += ["--out", str(results), "--marker", ".done", "--decoder", "pil", "-q"]
    command += ["--model", model] if model else []
    watch = subprocess.Popen(command, cwd=ROOT)
    samples: list[tuple[int, float]] = []
    fed = written = 0
    try:
        while written < count:
            if watch.poll() is not None:
                raise RuntimeError(f"the watch stopped with exit code {watch.returncode}")
            while fed < min(count, written + AHEAD * BATCH):
                for index in range(fed, min(fed + BATCH, count)):
                    name = watched / f"{index:06d}.png"
                    shutil.copyfile(sources[index % DISTINCT], name)
                    name.with_name(name.name + ".done").touch()
                fed = min(fed + BATCH, count)
            time.sleep(0.2)
            written = rows_written(results) if results.is_dir() else 0
            samples.append((written, resident_mib(watch.pid)))
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=30)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--model", help="checkpoint (default: the demo model)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        samples = soak(Path(folder), args.files, args.model)
        seconds = time.monotonic() - started
    quarter = args.files / QUARTERS
    rows = []
    for part in range(QUARTERS):
        inside = [mib for n, mib in samples if part * quarter <= n < (part + 1) * quarter]
        inside = inside or [mib for n, mib in samples if n >= part * quarter][:1]
        rows.append([f"{part * quarter:.0f}–{(part + 1) * quarter:.0f}", f"{max(inside):.0f}"])
    facts = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "watch-soak.json").write_text(
        json.dumps({"machine": facts, "files": args.files, "samples": samples}) + "\n"
    )
    text = (
        f"# Resident memory of a watch: {facts['cpu']}, {facts['isa']}\n\n"
        f"`psicbatch run --watch` (PIL decoding, {args.model or 'demo model'}), "
        f"{args.files} files of {SIZE[0]}x{SIZE[1]} PNG fed {BATCH} at a time, at most "
        f"{AHEAD} batches ahead of the results; {seconds:.0f} s in all.\n\n"
        + "\n".join(markdown_table(["results written", "peak resident MiB"], rows))
        + "\n"
    )
    (args.out / "watch-soak.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
