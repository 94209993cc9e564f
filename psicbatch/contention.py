"""What else used this process's CPUs while a benchmark measured or a run inspected: other
processes, and a virtual machine's hypervisor (steal time: CPU time it gave other guests).
Both lower every figure with no change in psicbatch; a report that says so is read for
what it is, not as a slower commit, engine or setting.

Counted from ``/proc/stat`` over the CPUs this process may run on (its affinity), less the
CPU time of the process itself and of the worker processes it waited for. Where
``/proc/stat`` is absent (not Linux), nothing is recorded.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC_STAT = Path("/proc/stat")
# A share of the CPUs this process may use, on average over the benchmark, above which
# its report says the figures are low; over a shorter time than NOTABLE_SECONDS, the
# clock ticks that /proc/stat counts in (10 ms) make the share too coarse to say so.
NOTABLE_SHARE = 0.1
NOTABLE_SECONDS = 1.0


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds so far on this process's CPUs: ``busy`` by every process, ``steal``
    by the hypervisor for other guests, ``own`` by this process and its waited-for
    children; ``clock``: a monotonic time."""

    cpus: int
    busy: float
    steal: float
    own: float
    clock: float


def cpu_times(stat: Path = PROC_STAT) -> CpuTimes | None:
    """Now's ``CpuTimes``, None where ``stat`` cannot be read."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    allowed = {f"cpu{cpu}" for cpu in os.sched_getaffinity(0)}
    tick = os.sysconf("SC_CLK_TCK")
    busy = steal = 0.0
    for line in lines:
        name, *values = line.split()
        if name not in allowed or len(values) < 8:
            continue
        user, nice, system, _idle, _iowait, irq, softirq, stolen = map(int, values[:8])
        busy += (user + nice + system + irq + softirq) / tick  # guest time is within user
        steal += stolen / tick
    mine = os.times()
    own = mine.user + mine.system + mine.children_user + mine.children_system
    return CpuTimes(len(allowed), busy, steal, own, time.monotonic())


def contention(start: CpuTimes | None, end: CpuTimes | None) -> dict[str, Any] | None:
    """Between two readings, the CPUs other processes and the hypervisor kept busy on
    average (0.5: half of one CPU), and whether that makes the figures notably low."""
    if start is None or end is None or end.clock <= start.clock:
        return None
    seconds = end.clock - start.clock
    others = max(0.0, (end.busy - start.busy) - (end.own - start.own)) / seconds
    steal = max(0.0, end.steal - start.steal) / seconds
    return {
        "seconds": seconds,
        "cpus": end.cpus,
        "other_processes_cpus": others,
        "steal_cpus": steal,
        "notable": seconds >= NOTABLE_SECONDS and others + steal > NOTABLE_SHARE * end.cpus,
    }


def contention_line(
    measured: dict[str, Any] | None,
    during: str = "the benchmark",
    lowered: str = "every figure here is",
) -> str:
    """The contention ``during`` a measurement in words, saying which figures are
    ``lowered`` when it was notable."""
    if measured is None:
        return "CPU contention: not recorded (it is read from /proc/stat, on Linux)."
    others, steal, cpus = (measured[k] for k in ("other_processes_cpus", "steal_cpus", "cpus"))
    said = (
        f"CPU contention during {during} ({measured['seconds']:.0f} s): other processes "
        f"kept {others:.2f} of this process's {cpus} CPUs busy on average, the hypervisor "
        f"took {steal:.2f} of them (steal time)"
    )
    if measured["notable"]:
        return f"{said}: {lowered} lower than on an otherwise idle machine."
    return f"{said}."
