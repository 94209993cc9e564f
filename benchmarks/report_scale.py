"""Time and peak memory of ``psicbatch report`` on a large results file.

    python benchmarks/report_scale.py OUT_DIR [--rows 480000] [--root CHECKOUT] [--audit]

Makes a results file by running the bundled demo model on 24 generated images and
repeating its rows to ``--rows`` (a long run's or a day's worth), then times ``psicbatch
report`` on it and on the 24-row file (start-up: imports), each in a fresh process whose
peak RSS comes from the operating system. ``--root`` times another checkout's psicbatch
(e.g. an earlier version) on files made the same way. ``--audit`` also times ``psicbatch
eval RESULTS --labels`` on both files against the 24 labelled images (every row of the
large file then names a labelled image: the most rows to match). Writes
OUT_DIR/report_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def psicbatch(root: Path, *args: str) -> subprocess.Popen:
    """psicbatch of the checkout ``root`` (run from there: ``-m`` imports the working
    folder's package first)."""
    environment = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "psicbatch", *args]
    return subprocess.Popen(command, cwd=root, env=environment, stdout=subprocess.DEVNULL)


def timed(root: Path, *args: str) -> dict:
    """One psicbatch command in a fresh process: its wall time and peak RSS."""
    began = time.perf_counter()
    child = psicbatch(root, *args)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"psicbatch {' '.join(args)} failed")
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def timed_report(root: Path, results: Path) -> dict:
    return timed(root, "report", str(results), "--html", str(results.with_suffix(".html")))


def timed_audit(root: Path, results: Path, labels: Path) -> dict:
    out = results.with_name(results.stem + "-audit")
    return timed(root, "eval", str(results), "--labels", str(labels), "-o", str(out), "-q")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=480_000)
    parser.add_argument("--root", type=Path, default=ROOT, help="the psicbatch checkout to time")
    parser.add_argument("--audit", action="store_true", help="also time eval RESULTS --labels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        small, large = work / "small.parquet", work / "large.parquet"
        for step in (
            ["synth", str(work / "data"), "--count", "24"],
            ["run", str(work / "data" / "images"), "--out", str(small), "-q", "--device", "cpu"],
        ):
            if psicbatch(ROOT, *step).wait() != 0:
                sys.exit(f"psicbatch {step[0]} failed")
        table = pq.read_table(small)
        repeated = pa.concat_tables([table] * -(-args.rows // table.num_rows)).slice(0, args.rows)
        pq.write_table(repeated.replace_schema_metadata(table.schema.metadata), large)
        results = {
            "command": " ".join(["python", "benchmarks/report_scale.py", *sys.argv[1:]]),
            "rows": args.rows,
            "small": timed_report(args.root, small),
            "large": timed_report(args.root, large),
        }
        if args.audit:
            for name, file in (("small", small), ("large", large)):
                results[f"audit_{name}"] = timed_audit(args.root, file, work / "data")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report_scale.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
