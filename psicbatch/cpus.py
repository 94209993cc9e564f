"""How many CPUs this process may keep busy, for thread and process pools sized to the
machine: its affinity (a container's or scheduler's CPU set) lowered to its CPU quota (a
container's ``--cpus``, a Kubernetes CPU limit), not the machine's count.

A quota is CPU time, not CPUs: a container limited to 4 CPUs on a host of 32 cores
still sees all 32, and torch's default of one thread per physical core spends the quota
early in each scheduling period, then waits out the rest of it throttled, every thread
stalled at the next synchronisation by the slowest.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_TOPOLOGY = Path("/sys/devices/system/cpu")


def available_cpus() -> int:
    """CPUs this process may keep busy: its affinity, lowered to its CPU quota rounded
    down. On a 2-core Xeon, under a quota of 1 CPU one thread ran 1.9-2.7x as fast as two;
    under 1.25 and 1.5, two threads gained nothing steadily and varied twice as widely
    (benchmarks/results/cpu-quota-avx512/): a line wants the steady rate."""
    return _within(cpu_quota())


def _within(quota: float | None) -> int:
    """The affinity's CPUs, at most ``quota`` of them rounded down (at least one)."""
    cpus = len(_affinity())
    return cpus if quota is None else max(1, min(cpus, math.floor(quota)))


def cpu_quota(root: Path = CGROUP_ROOT, membership: str | None = None) -> float | None:
    """The CPUs' worth of time this process may use (2.5: two and a half CPUs), the least
    that its cgroup and the cgroups above it allow (cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us``); None where none is set or none can be read.
    ``membership``: the text of ``/proc/self/cgroup`` (read when not given)."""
    try:
        if membership is None:
            membership = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    limits = []
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            limits += _limits(root, path, _v2_limit)
        elif "cpu" in controllers.split(","):
            for mount in (root / controllers, root / "cpu"):
                if mount.is_dir():
                    limits += _limits(mount, path, _v1_limit)
                    break
    return min(limits, default=None)


def _limits(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The limits set in the cgroup at ``path`` below ``mount`` and in those above it.
    Inside a container the path named may not exist (it is the host's): the folders
    that do, up to the mount (the container's own cgroup), are read."""
    folder = mount / path.lstrip("/")
    found = []
    for level in (folder, *folder.parents):
        if not level.is_relative_to(mount):
            break
        limit = read(level)
        if limit is not None:
            found.append(limit)
    return found


def _v2_limit(folder: Path) -> float | None:
    """``cpu.max``: ``QUOTA PERIOD`` in microseconds, or ``max PERIOD`` for none."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()
        return None if quota == "max" else _share(int(quota), int(period))
    except (OSError, ValueError):
        return None


def _v1_limit(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``; a quota of -1 is none."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return _share(quota, period)


def _share(quota: int, period: int) -> float | None:
    """CPUs' worth of ``quota`` per ``period``; None for no quota (v1 writes -1)."""
    return quota / period if quota > 0 and period > 0 else None


def physical_cores() -> int:
    """The physical cores among the CPUs this process may run on (SMT siblings count
    once), as torch counts them for its default thread count; the CPUs where the
    topology cannot be read."""
    cpus = _affinity()
    cores = set()
    for cpu in cpus:
        topology = CPU_TOPOLOGY / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            cores.add((package, (topology / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def cpus_line() -> str:
    """The CPUs psicbatch keeps busy here, and why not the machine's all, in words."""
    return _line(cpu_quota())


def fewer_cpus_line() -> str | None:
    """``cpus_line`` where psicbatch keeps fewer CPUs busy than the machine has (a CPU
    set, a quota), None where it keeps them all: the quota read once for both."""
    quota = cpu_quota()
    return _line(quota) if _within(quota) < (os.cpu_count() or 1) else None


def _line(quota: float | None) -> str:
    limit = f" (a CPU quota of {quota:g})" if quota is not None else ""
    return f"{_within(quota)} available to psicbatch{limit}, of {os.cpu_count()}"


def limit_threads_to_quota() -> None:
    """Where a CPU quota allows fewer CPUs than torch would start threads (one per
    physical core), start that many (``OMP_NUM_THREADS``, read by torch, oneDNN and MKL
    when they load, in this process and the workers it starts), unless the user set it."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    budget = available_cpus()
    if budget < physical_cores():
        os.environ["OMP_NUM_THREADS"] = str(budget)


def _affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # platforms without affinity
        return list(range(os.cpu_count() or 1))
