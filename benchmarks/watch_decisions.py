"""What deciding parts costs a watch (``run --watch --group-by``): a restart's rebuild of
its parts from a long watch's rows, and the work each batch adds to the watch's loop;
beside them, the restart's reading of its ledger (every file version inspected), which
every watch does.

For each ``--rows`` size: a watch folder of hourly merged files (3,600 rows each, as a
merged hour of one image a second holds) whose rows are the images of parts of
``--part-images`` each, every part decided in ``_parts.csv`` but the last ten; then, in a
process of its own (so its peak memory is the restart's), the ledger read
(``done_versions``) and ``PartDecisions`` opened on it (the restart: their times, and
the process's peak resident memory before and after), and
1,000 batches of 8 new rows added, their late images found first as the watch finds them
(the loop's time per batch).

    python benchmarks/watch_decisions.py OUT_DIR [--rows 60000,600000] [--part-images 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from revision import commit_of  # noqa: E402

from psicbatch.bench.machine import machine, resident_mib  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402
from psicbatch.run.job import PART_DECISIONS_FILE  # noqa: E402
from psicbatch.run.part_files import DECISION_COLUMNS  # noqa: E402
from psicbatch.run.part_table import PartGrouping  # noqa: E402
from psicbatch.run.watch import done_versions  # noqa: E402
from psicbatch.run.watch_parts import PartDecisions, WatchParts  # noqa: E402

HOUR_ROWS = 3600
PATTERN = r"(part\d+)_cam"
START = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
BATCHES, BATCH = 1000, 8


def row(index: int, images: int) -> dict:
    path = f"/line/cameras/part{index // images:07d}_cam{index % images}.png"
    return {
        "path": path,
        "path_bytes": path.encode(),
        "is_defect": index % 97 == 0,
        "error": None,
        "probability": 0.9 if index % 97 == 0 else 0.1,
        "completed_at": START + datetime.timedelta(seconds=index),
        "file_size": 100_000 + index % 1000,
        "file_mtime_ns": 1_764_000_000_000_000_000 + index,
    }


def make_folder(out: Path, rows: int, images: int) -> None:
    """Hourly merged files of ``rows`` rows; every part decided but the last ten."""
    for first in range(0, rows, HOUR_ROWS):
        stamp = START + datetime.timedelta(seconds=first)
        hour = out / f"date={stamp:%Y-%m-%d}" / f"hour={stamp:%H}"
        hour.mkdir(parents=True)
        table = pa.Table.from_pylist(
            [row(i, images) for i in range(first, min(rows, first + HOUR_ROWS))]
        )
        pq.write_table(table, hour / f"part-{stamp:%Y%m%dT%H}-merged.parquet")
    parts = rows // images
    lines = [
        f"2026-12-01T00:00:00.000+00:00,part{p:07d},pass,{images},0,0,0.1,"
        for p in range(parts - 10)
    ]
    header = ",".join(DECISION_COLUMNS)
    (out / PART_DECISIONS_FILE).write_text("\n".join([header, *lines]) + "\n")


def measure(out: Path, rows: int, images: int) -> dict:
    """In this process, on the folder made for it: the restart's time and memory, then
    the loop's time per batch."""
    before = resident_mib(field="VmHWM")  # its own peak, not the parent's
    started = time.perf_counter()
    ledger = len(done_versions(out))
    ledger_seconds = time.perf_counter() - started
    started = time.perf_counter()
    decisions = PartDecisions(out, WatchParts(PartGrouping(PATTERN, images)))
    rebuild = time.perf_counter() - started
    peak = resident_mib(field="VmHWM")
    restart_decided = sum(decisions.counts.values())
    new = [row(rows + i, images) for i in range(BATCHES * BATCH)]
    started = time.perf_counter()
    for start in range(0, len(new), BATCH):
        batch = new[start : start + BATCH]
        if not hasattr(decisions, "late_metadata"):  # code from before it: runs on it too
            decisions.add(batch)
            continue
        parts = decisions.parts_of(batch)
        decisions.late_metadata(parts)  # recorded in the batch's rows file, before it
        decisions.add(batch, parts)
    per_batch = (time.perf_counter() - started) / BATCHES
    return {
        "rows": rows,
        "ledger_versions": ledger,
        "ledger_seconds": ledger_seconds,
        "rebuild_seconds": rebuild,
        "peak_mib_before": before,
        "peak_mib_after": peak,
        "decided_at_restart": restart_decided,
        "ms_per_batch": per_batch * 1000,
        "decided_in_loop": sum(decisions.counts.values()) - restart_decided,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", default="60000,600000")
    parser.add_argument("--part-images", type=int, default=3)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a child's folder
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, int(args.rows), args.part_images)))
        return
    results = []
    for rows in map(int, args.rows.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            make_folder(Path(folder), rows, args.part_images)
            child = [sys.executable, __file__, str(args.out), "--one", folder, "--rows", str(rows)]
            child += ["--part-images", str(args.part_images)]
            done = subprocess.run(child, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout))
    revision = commit_of(ROOT)
    facts = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"machine": facts, "revision": revision, "part_images": args.part_images}
    (args.out / "watch-decisions.json").write_text(json.dumps(record | {"results": results}) + "\n")
    header = [
        "rows in the folder",
        "restart: ledger s",
        "restart: rebuild s",
        "peak MiB before / after",
        "decided at restart",
        "loop: ms per batch of 8",
    ]
    table = [
        [
            f"{r['rows']:,}",
            f"{r['ledger_seconds']:.2f}",
            f"{r['rebuild_seconds']:.2f}",
            f"{r['peak_mib_before']:.0f} / {r['peak_mib_after']:.0f}",
            r["decided_at_restart"],
            f"{r['ms_per_batch']:.3f}",
        ]
        for r in results
    ]
    text = (
        f"# Part decisions in a watch: {facts['cpu']}, {facts['isa']}\n\n"
        f"The ledger and `PartDecisions` at {revision}, parts of {args.part_images} images, "
        f"hourly merged files of {HOUR_ROWS} rows, every part decided but the last ten; then "
        f"{BATCHES} batches of {BATCH} new rows. Each size in a process of its own.\n\n"
        + "\n".join(markdown_table(header, table))
        + "\n"
    )
    (args.out / "watch-decisions.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
