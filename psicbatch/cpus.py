"""How many CPUs this process may use: its affinity (a container's or scheduler's CPU
set), not the machine's count, for thread and process pools sized to the machine."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may run on (its affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without affinity
        return os.cpu_count() or 1
