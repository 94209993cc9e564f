"""What merging a watch's finished hours saves its readers, on this machine, in one run.

A slow line gets a part per image: an hour of one image a second is 3,600 parts. This
takes a real part from a short watch (the demo model on one generated image), writes
``--parts`` copies of it into one finished hour (each naming another file, as a line's
would), and times what reads them: the ledger a restarted watch builds
(``done_versions``) and the table ``psicbatch report`` and ``info`` read
(``read_results_table``); then the merge itself (``compact``), and the same reads of
the merged hour.

Usage: python benchmarks/watch_parts.py OUT_DIR [--parts 3600]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.data.synth import generate  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402
from psicbatch.run.compaction import compact  # noqa: E402
from psicbatch.run.output import write_part  # noqa: E402
from psicbatch.run.results import read_results_table  # noqa: E402
from psicbatch.run.watch import done_versions  # noqa: E402


def one_real_part(folder: Path) -> tuple[pa.Table, Path]:
    """A part (and the watch's identity file) from a watch given one image."""
    (image,) = generate(folder / "generated", 1, (512, 512), seed=9)
    watched, out = folder / "watched", folder / "first"
    watched.mkdir()
    command = [sys.executable, "-m", "psicbatch", "run", "--watch", str(watched)]
    watch = subprocess.Popen([*command, "--out", str(out), "--marker", ".done", "-q"], cwd=ROOT)
    (watched / "0.png").write_bytes(image.read_bytes())
    (watched / "0.png.done").touch()
    deadline = time.monotonic() + 120
    while not (parts := list(out.glob("date=*/hour=*/part-*.parquet"))):
        if watch.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the watch gave no part")
        time.sleep(0.2)
    watch.send_signal(signal.SIGTERM)
    watch.wait(timeout=30)
    return pq.read_table(parts[0]), out / "_watch.json"


def timed(work: object) -> float:
    began = time.perf_counter()
    work()  # type: ignore[operator]
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--parts", type=int, default=3600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        table, identity = one_real_part(folder)
        out = folder / "results"
        hour = out / "date=2026-12-04" / "hour=09"
        hour.mkdir(parents=True)
        (out / identity.name).write_bytes(identity.read_bytes())
        for index in range(args.parts):
            path = f"/line/camera/{index:06d}.png"
            one = table.set_column(
                table.schema.get_field_index("path_bytes"), "path_bytes", [[path.encode()]]
            )
            seconds = f"{index // 60 % 60:02d}{index % 60:02d}"
            write_part(one, hour / f"part-20261204T09{seconds}000000-1.parquet")
        figures = {}
        for state in ("parts", "merged"):
            if state == "merged":
                figures["merge_seconds"] = timed(lambda: compact(out, out / "current"))
            files = len(list(hour.glob("part-*.parquet")))
            ledger = timed(lambda: done_versions(out))
            assert len(done_versions(out)) == args.parts
            report = timed(lambda: read_results_table(out))
            figures[state] = {"files": files, "ledger_seconds": ledger, "report_seconds": report}
    facts = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "watch-parts.json").write_text(
        json.dumps({"machine": facts, "parts": args.parts, **figures}, indent=1) + "\n"
    )
    rows = [
        [state, figures[state]["files"], f"{figures[state]['ledger_seconds']:.2f}",
         f"{figures[state]['report_seconds']:.2f}"]
        for state in ("parts", "merged")
    ]  # fmt: skip
    header = ["the hour as", "files", "ledger on restart (s)", "report's table (s)"]
    text = (
        f"# A watch's hour of {args.parts} one-image parts: {facts['cpu']}, {facts['isa']}\n\n"
        + "\n".join(markdown_table(header, rows))
        + f"\n\nMerging the hour took {figures['merge_seconds']:.2f} s (in the watch, a thread "
        "beside the inspection).\n"
    )
    (args.out / "watch-parts.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
