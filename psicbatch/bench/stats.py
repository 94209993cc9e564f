"""Latency statistics and the stability rule used by every measurement.

As in trtexec and Triton's perf_analyzer: warm-up is measured and reported separately,
then fixed-length windows are timed until the last ``count`` windows' throughputs lie
within ``tolerance`` of their mean (or the time budget runs out, which is reported).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def latency_summary(seconds: list[float]) -> dict[str, float | int | str]:
    """min/mean/p50/p90/p95/p99/max in milliseconds of a series of latencies."""
    values = np.asarray(seconds, dtype=float) * 1000
    if values.size == 0:
        raise ValueError("no latencies to summarise")
    summary: dict[str, float | int | str] = {"unit": "ms", "count": int(values.size)}
    summary["min"] = float(values.min())
    summary["mean"] = float(values.mean())
    for p in PERCENTILES:
        summary[f"p{p}"] = float(np.percentile(values, p))
    summary["max"] = float(values.max())
    return summary


def is_stable(window_rates: list[float], count: int = 3, tolerance: float = 0.10) -> bool:
    """The last ``count`` window throughputs all within ``tolerance`` of their mean."""
    if len(window_rates) < count:
        return False
    last = np.asarray(window_rates[-count:], dtype=float)
    mean = last.mean()
    return bool(mean > 0 and np.all(np.abs(last - mean) <= tolerance * mean))


@dataclass
class Measurement:
    """Timings of one configuration: warm-up apart, then the windows until stable.
    ``latencies`` are seconds per launch (per engine call on a GPU, averaged over the
    launches between two events)."""

    items_per_call: int
    warmup_seconds: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    window_rates: list[float] = field(default_factory=list)
    stable: bool = False

    @property
    def throughput(self) -> float:
        """Items per second over the measured (post warm-up) calls."""
        total = sum(self.latencies)
        return self.items_per_call * len(self.latencies) / total if total else 0.0

    def to_dict(self) -> dict:
        return {
            "items_per_call": self.items_per_call,
            "warmup": latency_summary(self.warmup_seconds) if self.warmup_seconds else None,
            "first_call_ms": 1000 * self.warmup_seconds[0] if self.warmup_seconds else None,
            "latency_per_call": latency_summary(self.latencies),
            "throughput_items_per_s": self.throughput,
            "windows": len(self.window_rates),
            "window_rates": self.window_rates,
            "stable": self.stable,
        }


def measure(
    call: Callable[[], float | None],
    items_per_call: int,
    warmup_calls: int = 2,
    window_seconds: float = 2.0,
    max_seconds: float = 30.0,
    clock: Callable[[], float] = time.perf_counter,
    launches_per_call: int = 1,
) -> Measurement:
    """Time ``call`` after warm-up in windows until stable or ``max_seconds`` have passed.

    Every window holds at least one call, so slow configurations still get measured. A
    ``call`` that returns a duration is timed by it (seconds per launch, as a GPU's events
    measure ``launches_per_call`` launches between two of them); otherwise by ``clock``.
    """
    result = Measurement(items_per_call)

    def timed() -> float:
        start = clock()
        seconds = call()
        return (clock() - start) / launches_per_call if seconds is None else seconds

    for _ in range(warmup_calls):
        result.warmup_seconds.append(timed())
    began = clock()
    while not result.stable and clock() - began < max_seconds:
        window_start, calls = clock(), 0
        while calls == 0 or clock() - window_start < window_seconds:
            result.latencies.append(timed())
            calls += 1
        launches = calls * launches_per_call
        result.window_rates.append(items_per_call * launches / (clock() - window_start))
        result.stable = is_stable(result.window_rates)
    return result
