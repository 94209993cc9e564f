"""The tables of ``cpu_quota.sh``: images/s and throttling by torch's thread count under
one CPU quota, and the count psicbatch picks there.

    python benchmarks/cpu_quota_summary.py OUT_DIR QUOTA
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def counts(path: Path) -> dict[str, int]:
    """cpu.stat's counters."""
    pairs = (line.split() for line in path.read_text().splitlines() if line.strip())
    return {name: int(value) for name, value in pairs}


def order(bench: Path) -> tuple[int, int]:
    """A run's round, then its thread count (``threads-N-ROUND``)."""
    _, threads, round_ = bench.parent.name.split("-")
    return int(round_), int(threads)


def main(out: Path, quota: str) -> None:
    runs = sorted(out.glob("threads-*/bench.json"), key=order)
    if not runs:
        raise SystemExit(f"{out}: no runs")
    reports = [json.loads(bench.read_text()) for bench in runs]
    machine, engine = reports[0]["machine"], reports[0]["engine"]
    command = reports[0]["command"].split(" -o ")[0]
    print(f"# psicbatch bench under a CPU quota of {quota} CPUs\n")
    print(
        f"Machine: {machine['cpu']}, {machine['cores']} CPUs ({machine['isa']}); torch "
        f"{machine['torch']}. Engine: {engine['backend']} {engine['precision']}. Command: "
        f"`{command}`, each run in a cgroup of its own with `OMP_NUM_THREADS` set to the "
        f"run's thread count. psicbatch picks {machine['cpus_available']} under this quota "
        f"(recorded quota {machine['cpu_quota']}).\n"
    )
    print("| run | torch threads | images/s | s per image | throttled periods |")
    print("| --- | --- | --- | --- | --- |")
    by_threads: dict[int, list[float]] = {}
    for bench, report in zip(runs, reports, strict=True):
        result = report["results"][0]
        stat = counts(bench.parent.with_suffix(".cpu-stat"))
        threads = report["machine"]["torch_threads"]
        by_threads.setdefault(threads, []).append(result["throughput_items_per_s"])
        print(
            f"| {bench.parent.name} | {threads} | {result['throughput_items_per_s']:.2f} | "
            f"{result['seconds_per_image']:.3f} | {stat['nr_throttled']} of "
            f"{stat['nr_periods']} |"
        )
    print("\n| torch threads | images/s, each round |")
    print("| --- | --- |")
    for threads, rates in sorted(by_threads.items()):
        print(f"| {threads} | {', '.join(f'{rate:.2f}' for rate in rates)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
