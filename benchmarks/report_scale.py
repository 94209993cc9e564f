"""Time and peak memory of ``psicbatch report`` on a large results file.

    python benchmarks/report_scale.py OUT_DIR [--rows 480000] [--root CHECKOUT] [--audit]
                                             [--compare] [--parts]

Makes a results file by running the bundled demo model on 24 generated images and
repeating its rows to ``--rows`` (a long run's or a day's worth), then times ``psicbatch
report`` on it and on the 24-row file (start-up: imports), each in a fresh process whose
peak RSS comes from the operating system. ``--root`` times another checkout's psicbatch
(e.g. an earlier version) on files made the same way. ``--audit`` also times ``psicbatch
eval RESULTS --labels`` on both files against the 24 labelled images (every row of the
large file then names a labelled image: the most rows to match). ``--compare`` also
times ``psicbatch report NEW --compare-to OLD`` where OLD is the large file with every
row's path made unique (``--rows`` images) and NEW the same rows with each probability
moved by up to +-0.05 and judged again at the run's threshold (a retrained model's kind
of change), beside ``report NEW`` alone. ``--parts`` also times ``psicbatch report
--parts-csv`` on OLD with parts of ten images (``--group-by`` on the row numbers that begin
its paths). Writes OUT_DIR/report_scale.json.
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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


PARTS_OF_TEN = r"^(\d{6})\d-"  # rows 0000000-0000009 are one part, and so on


def unique_paths(large: pa.Table, path: Path) -> pa.Table:
    """``large`` with a path of its own on every row (its row number first), written to
    ``path`` too."""
    names = pa.array(
        [f"{index:07d}-{path}" for index, path in enumerate(large["path"].to_pylist())]
    )
    unique = large.set_column(large.schema.get_field_index("path"), "path", names)
    unique = unique.set_column(
        unique.schema.get_field_index("path_bytes"), "path_bytes", pc.cast(names, pa.binary())
    )
    pq.write_table(unique.replace_schema_metadata(large.schema.metadata), path)
    return unique


def compared_pair(large: pa.Table, old: Path, new: Path) -> None:
    """``old``: ``large`` with a path of its own on every row; ``new``: the same images
    with their probabilities moved a little and judged again at the run's threshold."""
    unique = unique_paths(large, old)
    metadata = json.loads(large.schema.metadata[b"psicbatch"])
    threshold = metadata["thresholds"]["classification"]
    moved = np.clip(
        unique["probability"].to_numpy()
        + np.random.default_rng(0).uniform(-0.05, 0.05, unique.num_rows),
        0,
        1,
    ).astype(np.float32)
    changed = unique.set_column(
        unique.schema.get_field_index("probability"), "probability", pa.array(moved)
    )
    changed = changed.set_column(
        changed.schema.get_field_index("is_defect"), "is_defect", pa.array(moved >= threshold)
    )
    pq.write_table(changed.replace_schema_metadata(large.schema.metadata), new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=480_000)
    parser.add_argument("--root", type=Path, default=ROOT, help="the psicbatch checkout to time")
    parser.add_argument("--audit", action="store_true", help="also time eval RESULTS --labels")
    parser.add_argument("--compare", action="store_true", help="also time report --compare-to")
    parser.add_argument("--parts", action="store_true", help="also time report --parts-csv")
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
        if args.compare:
            old, new = work / "old.parquet", work / "new.parquet"
            compared_pair(repeated.replace_schema_metadata(table.schema.metadata), old, new)
            results["new_alone"] = timed_report(args.root, new)
            results["new_compared"] = timed(
                args.root,
                "report",
                str(new),
                "--html",
                str(work / "c.html"),
                "--compare-to",
                str(old),
            )
        if args.parts:
            unique = work / "unique.parquet"
            unique_paths(repeated.replace_schema_metadata(table.schema.metadata), unique)
            parts_csv = ["--parts-csv", str(work / "parts.csv"), "--group-by", PARTS_OF_TEN]
            results["parts"] = timed(args.root, "report", str(unique), *parts_csv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report_scale.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
