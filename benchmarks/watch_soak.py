"""Resident memory and CPU of a long ``psicbatch run --watch``, as files keep arriving.

A watch runs for days on a line, and the line's folder keeps the files it was given.
The watch's memory and its CPU per file must not grow with the files it has inspected.
This feeds it ``--files`` files (copies of a few generated PNGs, each completed by a
``.done`` marker), a batch at a time and never more than a few batches ahead of its
results, and samples its resident memory (VmRSS) and CPU time by the number of results
written; then it leaves the watch idle for ``--idle`` seconds, all files still in its
folder, and measures the CPU it takes doing nothing. With ``--archive`` the files whose
results are written are removed instead, as a line's archiving would move them away.

Usage: python benchmarks/watch_soak.py OUT_DIR [--files 4000] [--size 1408x512]
       [--idle 20] [--archive] [--checkout DIR] [--model CHECKPOINT]
``--checkout`` runs the watch of another checkout (an earlier commit), for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
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

from revision import commit_of  # noqa: E402

from psicbatch.bench.machine import machine, resident_mib  # noqa: E402
from psicbatch.data.synth import generate  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402

DISTINCT = 16  # generated images, copied under new names
BATCH = 8  # files fed at once, a watch batch's most
AHEAD = 4  # batches fed beyond the results written
QUARTERS = 4
Sample = tuple[int, float, float]  # results written, resident MiB, CPU seconds


def cpu_seconds(pid: int) -> float:
    """User and system time of the process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_rows(results: Path, counted: dict[Path, int]) -> int:
    """Rows in the watch's finished parts (temporary names are not yet parts); ``counted``
    keeps each part's count, so each part is read once."""
    for part in results.rglob("*.parquet"):
        if part not in counted:
            counted[part] = pq.read_metadata(part).num_rows
    return sum(counted.values())


def soak(folder: Path, args: argparse.Namespace) -> tuple[list[Sample], float]:
    """Feed the files to a watch, then leave it idle: the samples, and the share of one
    core the idle watch took."""
    size = tuple(int(side) for side in args.size.split("x"))
    sources = sorted(generate(folder / "generated", DISTINCT, size, seed=7))
    watched, results = folder / "watched", folder / "results"
    watched.mkdir()
    command = [sys.executable, "-m", "psicbatch", "run", "--watch", str(watched)]
    command += ["--out", str(results), "--marker", ".done", "--decoder", "pil", "-q"]
    command += ["--model", str(args.model.resolve())] if args.model else []
    watch = subprocess.Popen(command, cwd=args.checkout)
    samples: list[Sample] = []
    fed = written = 0
    counted: dict[Path, int] = {}
    try:
        while written < args.files:
            if watch.poll() is not None:
                raise RuntimeError(f"the watch stopped with exit code {watch.returncode}")
            while fed < min(args.files, written + AHEAD * BATCH):
                for index in range(fed, min(fed + BATCH, args.files)):
                    name = watched / f"{index:06d}.png"
                    shutil.copyfile(sources[index % DISTINCT], name)
                    name.with_name(name.name + ".done").touch()
                fed = min(fed + BATCH, args.files)
            time.sleep(0.2)
            newly = count_rows(results, counted) if results.is_dir() else 0
            if args.archive:  # the files of the results written so far leave the folder
                for index in range(written, newly):
                    name = watched / f"{index:06d}.png"
                    name.unlink(missing_ok=True)
                    name.with_name(name.name + ".done").unlink(missing_ok=True)
            written = newly
            resident = resident_mib(watch.pid)
            if resident is None:
                raise RuntimeError(f"the watch (pid {watch.pid}) has ended")
            samples.append((written, resident, cpu_seconds(watch.pid)))
        idle_from = cpu_seconds(watch.pid)
        time.sleep(args.idle)
        idle_share = (cpu_seconds(watch.pid) - idle_from) / args.idle
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=30)
    return samples, idle_share


def quarter_rows(samples: list[Sample], files: int) -> list[list[str]]:
    """Per quarter of the files: peak resident memory and CPU milliseconds per file."""
    quarter = files / QUARTERS
    rows = []
    for part in range(QUARTERS):
        low, high = part * quarter, (part + 1) * quarter
        inside = [s for s in samples if low <= s[0] < high] or [
            next(s for s in samples if s[0] >= low)
        ]
        after = next((s for s in samples if s[0] >= high), samples[-1])
        before = inside[0]
        per_file = (after[2] - before[2]) / max(after[0] - before[0], 1) * 1000
        peak = max(s[1] for s in inside)
        rows.append([f"{low:.0f}–{high:.0f}", f"{peak:.0f}", f"{per_file:.1f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--size", default="1408x512", help="HxW of the generated images")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds left idle at the end")
    parser.add_argument("--archive", action="store_true", help="remove files once inspected")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="whose psicbatch runs")
    parser.add_argument("--model", type=Path, help="checkpoint (default: the demo model)")
    args = parser.parse_args()
    revision = commit_of(args.checkout)  # before the watch starts: the code it runs
    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        samples, idle_share = soak(Path(folder), args)
        seconds = time.monotonic() - started
    facts = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"machine": facts, "revision": revision, "files": args.files, "size": args.size}
    record |= {"archive": args.archive, "idle_seconds": args.idle}
    record |= {"idle_cpu_share": idle_share, "samples": samples}
    (args.out / "watch-soak.json").write_text(json.dumps(record) + "\n")
    header = ["results written", "peak resident MiB", "CPU ms per file"]
    text = (
        f"# A watch over {args.files} files: {facts['cpu']}, {facts['isa']}\n\n"
        f"`psicbatch run --watch` at {revision} (PIL decoding, "
        f"{args.model or 'demo model'}), {args.files} files of {args.size} PNG fed {BATCH} "
        f"at a time, at most {AHEAD} batches ahead of the results"
        + (", each file removed once its result was written" if args.archive else "")
        + f"; {seconds:.0f} s in all.\n\n"
        + "\n".join(markdown_table(header, quarter_rows(samples, args.files)))
        + f"\n\nThen idle for {args.idle:.0f} s"
        + ("" if args.archive else " with every file still in its folder")
        + f": {idle_share:.1%} of one core.\n"
    )
    (args.out / "watch-soak.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
