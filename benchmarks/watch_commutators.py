"""A watch deciding KolektorSDD's commutators as a line would (``run --watch --group-by``),
checked against the table made afterwards from the same results, and against the labels.

KolektorSDD is scaled by ``--scale`` (0.46: 580x230, as ``scaled_kolektorsdd.sh`` does); a
model is trained with the training defaults on 28 commutators (``kos01``-``kos27`` and
``kos34``, which holds copies of ``kos27``'s images: no test image is a training image)
and watches the other 22 arrive, one commutator at a time, image by image, as a camera
would write them (``--group-by 'kos[0-9]+' --part-images 8``). For every commutator: its
decision and when it came, after its last image was written (a rejection can come before
it). Then the watch is stopped, ``report OUT --parts-csv`` makes the table of the same
results (each commutator's decision must be the same), and ``eval OUT --labels`` counts
the commutators that escaped.

    python benchmarks/watch_commutators.py OUT_DIR [--scale 0.46] [--data KOLEKTORSDD]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from revision import commit_of  # noqa: E402

from psicbatch.bench.machine import machine  # noqa: E402
from psicbatch.reports import markdown_table  # noqa: E402
from psicbatch.run.job import PART_DECISIONS_FILE  # noqa: E402

PSICBATCH = [sys.executable, "-m", "psicbatch"]
TRAINING = [f"kos{n:02d}" for n in range(1, 28)] + ["kos34"]
PATTERN, IMAGES, TIMEOUT = "kos[0-9]+", 8, 30


def decisions(out: Path) -> dict[str, dict]:
    path = out / PART_DECISIONS_FILE
    if not path.exists():
        return {}
    with path.open(newline="") as file:
        return {row["part"]: row for row in csv.DictReader(file)}


def watch_the_line(model: Path, scaled: Path, work: Path, tested: list[str]) -> dict:
    """Feed the tested commutators to a watch; each one's decision and its delay."""
    line, out = work / "line", work / "watched"
    line.mkdir()
    parts = ["--group-by", PATTERN, "--part-images", str(IMAGES), "--part-timeout", str(TIMEOUT)]
    options = ["--model", model, "--settle", "0.5", "--device", "cpu", *parts]
    watch = subprocess.Popen(
        [*PSICBATCH, "run", "--watch", line, "--out", out, *options],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    last_written = {}
    try:
        time.sleep(8)  # the engine opens
        for commutator in tested:
            (line / commutator).mkdir()
            for image in sorted((scaled / commutator).glob("Part*.jpg")):
                shutil.copy(image, line / commutator / image.name)
                time.sleep(0.1)  # a camera's pace: an image every 0.1 s
            last_written[commutator] = datetime.datetime.now(datetime.timezone.utc)
            deadline = time.monotonic() + 60
            while commutator not in decisions(out):  # one commutator on the line at a time
                assert watch.poll() is None, watch.communicate()[1]
                assert time.monotonic() < deadline, f"{commutator}: no decision in 60 s"
                time.sleep(0.05)
    finally:
        os.killpg(watch.pid, signal.SIGTERM)
        said = watch.communicate(timeout=60)[1]
    status = " ".join(said.split("; results in ", 1)[-1].split()[1:])  # its last line, unwrapped
    made = decisions(out)
    delays = {
        name: (datetime.datetime.fromisoformat(made[name]["decided_at"]) - when).total_seconds()
        for name, when in last_written.items()
    }
    return {"out": out, "decisions": made, "delays": delays, "status": status}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=float, default=0.46)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/kolektorsdd")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        scaled = work / "kolektorsdd"
        scale = [sys.executable, ROOT / "benchmarks/scaled_kolektorsdd.py", args.data, scaled]
        subprocess.run([*scale, str(args.scale)], check=True, capture_output=True)
        model = work / "model.pt"
        folders = [scaled / name for name in TRAINING]  # folders of the dataset, read as such
        subprocess.run([*PSICBATCH, "train", *folders, "-o", model, "-q"], check=True)
        tested = sorted(p.name for p in scaled.glob("kos*") if p.name not in TRAINING)
        watched = watch_the_line(model, scaled, work, tested)
        table = work / "parts.csv"
        report = [*PSICBATCH, "report", watched["out"], "--parts-csv", table]
        report += ["--group-by", PATTERN, "--part-images", str(IMAGES)]
        subprocess.run(report, check=True, capture_output=True)
        with table.open(newline="") as file:
            afterwards = {row["part"]: row["decision"] for row in csv.DictReader(file)}
        audit = work / "audit"
        labels = [*PSICBATCH, "eval", watched["out"], "--labels", scaled, "-o", audit, "-q"]
        subprocess.run([*labels, "--layout", "kolektorsdd"], check=True, capture_output=True)
        parts = json.loads((audit / "metrics.json").read_text())["parts"]
    made, delays = watched["decisions"], watched["delays"]
    differ = sorted(name for name in made if made[name]["decision"] != afterwards.get(name))
    passed = [delays[name] for name in made if made[name]["decision"] == "pass"]
    rejected = [delays[name] for name in made if made[name]["decision"] == "reject"]
    facts = machine()
    revision = commit_of(ROOT)
    record = {
        "machine": facts,
        "revision": revision,
        "scale": args.scale,
        "training": TRAINING,
        "tested": sorted(made),
        "decisions": {name: made[name]["decision"] for name in sorted(made)},
        "seconds_after_last_image": delays,
        "decided_otherwise_afterwards": differ,
        "parts_against_labels": parts,
        "watch_status": watched["status"],
    }
    (args.out / "watch-commutators.json").write_text(json.dumps(record, indent=1) + "\n")
    rows = [
        [name, made[name]["decision"], made[name]["judged_defective"], f"{delays[name]:+.2f}"]
        for name in sorted(made)
    ]
    header = ["commutator", "decision", "images judged defective", "s after its last image"]
    text = (
        f"# Commutators decided by a watch: {facts['cpu']}, {facts['isa']}\n\n"
        f"`benchmarks/watch_commutators.py` at {revision}: KolektorSDD scaled by {args.scale}, "
        f"a model trained with the defaults on {len(TRAINING)} commutators, a watch "
        f"(`--group-by '{PATTERN}' --part-images {IMAGES} --part-timeout {TIMEOUT}`, "
        f"`--settle 0.5`) fed the other {len(made)} one at a time, an image every 0.1 s.\n\n"
        f"- decided otherwise by `report --parts-csv` on the same results afterwards: "
        f"{len(differ)} of {len(made)} {differ or ''}\n"
        f"- passed: {len(passed)}, their decision "
        + (
            f"{statistics.median(passed):.2f} s (median), {max(passed):.2f} s (most) after "
            "their last image was written"
            if passed
            else "-"
        )
        + f"\n- rejected: {len(rejected)}"
        + (
            f", {min(rejected):+.2f} to {max(rejected):+.2f} s after the last image"
            if rejected
            else ""
        )
        + f"\n- against the labels (`eval OUT --labels`): {parts['escapes']} of "
        f"{parts['defective']} defective commutators escaped, {parts['false_rejects']} of "
        f"{parts['parts'] - parts['defective']} good ones rejected\n"
        f"- the watch's last status line: {watched['status']}\n\n"
        + "\n".join(markdown_table(header, rows))
        + "\n"
    )
    (args.out / "watch-commutators.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
