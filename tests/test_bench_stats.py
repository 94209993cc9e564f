from __future__ import annotations

import time

import pytest

from psicbatch.bench.machine import DriverMemorySampler
from psicbatch.bench.measurements import engine_ceiling
from psicbatch.bench.stats import is_stable, latency_summary, measure


def test_latency_summary_on_a_known_series() -> None:
    seconds = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    summary = latency_summary(seconds)
    assert summary["unit"] == "ms" and summary["count"] == 100
    assert summary["min"] == pytest.approx(1) and summary["max"] == pytest.approx(100)
    assert summary["mean"] == pytest.approx(50.5)
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p90"] == pytest.approx(90.1)
    assert summary["p99"] == pytest.approx(99.01)
    with pytest.raises(ValueError):
        latency_summary([])


@pytest.mark.parametrize(
    ("rates", "stable"),
    [
        ([100, 100], False),  # too few windows
        ([50, 100, 104, 97], True),  # the slow first window is no longer among the last three
        ([100, 120, 80], False),  # 20% spread
        ([100, 109, 91], True),  # all within 10% of their mean (100)
        ([0, 0, 0], False),
    ],
)
def test_stability_rule(rates: list[float], stable: bool) -> None:
    assert is_stable(rates) is stable


class FakeClock:
    """Each call advances time by the next duration of a series: a synthetic timing run."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 0.0
        self.durations = iter(durations)

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.now += next(self.durations)


def test_measure_separates_warmup_and_stops_when_stable() -> None:
    clock = FakeClock([5.0, 3.0] + [0.1] * 1000)  # slow warm-up, then steady 0.1 s calls
    result = measure(
        clock.work,
        items_per_call=4,
        warmup_calls=2,
        window_seconds=1.0,
        max_seconds=60,
        clock=clock,
    )
    assert result.warmup_seconds == [5.0, 3.0]
    assert result.stable and len(result.window_rates) == 3
    assert all(rate == pytest.approx(40) for rate in result.window_rates)
    assert result.throughput == pytest.approx(40)
    assert result.to_dict()["latency_per_call"]["p99"] == pytest.approx(100)


def test_calls_timed_by_the_gpus_events_count_every_launch() -> None:
    """A GPU call launches 10 batches between two events and returns the seconds per
    launch by the GPU's clock; the host clock only bounds the windows."""
    clock = FakeClock([1.0] * 1000)  # each call holds the host for 1 s: 10 launches

    def launches() -> float:
        clock.work()
        return 0.08  # the GPU's own time per launch, below the host's 0.1 s

    result = measure(
        launches,
        items_per_call=4,
        warmup_calls=1,
        window_seconds=2.0,
        max_seconds=60,
        clock=clock,
        launches_per_call=10,
    )
    assert result.warmup_seconds == [0.08] and result.latencies[0] == 0.08
    assert result.throughput == pytest.approx(4 / 0.08)  # by the events
    assert all(rate == pytest.approx(40) for rate in result.window_rates)  # 10 x 4 per 1 s
    assert result.to_dict()["latency_per_call"]["p50"] == pytest.approx(80)


def test_measure_reports_instability_when_time_runs_out() -> None:
    # Windows alternate between 8 fast calls (16/s) and one slow call (0.5/s): never stable.
    clock = FakeClock(([1 / 16] * 8 + [2.0]) * 1000)
    result = measure(
        clock.work,
        items_per_call=1,
        warmup_calls=0,
        window_seconds=0.5,
        max_seconds=20,
        clock=clock,
    )
    assert not result.stable
    assert result.window_rates[:4] == [16.0, 0.5, 16.0, 0.5]
    assert result.to_dict()["stable"] is False


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_engines_are_compared_with_their_runtimes_int8_product(backend: str) -> None:
    pytest.importorskip(backend)
    ceiling = engine_ceiling(backend, "int8", "cpu", seconds=0.2)
    assert ceiling["precision"] == f"int8 ({backend})" and ceiling["gflops"] > 0
    assert engine_ceiling("torch", "fp32", "cpu", seconds=0.2)["precision"] == "float32"


def test_the_driver_memory_sampler_keeps_the_highest_reading() -> None:
    """Readings taken while the work runs, plus one before and one after: the peak is
    the highest of them, even when the work has freed it by the end."""
    readings = iter([100.0, 900.0, 300.0] + [200.0] * 1000)
    with DriverMemorySampler(lambda: next(readings), interval=0.001) as sampler:
        deadline = time.monotonic() + 5
        while sampler.peak_mib != 900.0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert sampler.peak_mib == 900.0  # read by the sampling thread, during the work
    assert sampler.peak_mib == 900.0  # the lower readings after it do not replace it
    with DriverMemorySampler(None) as idle:  # a CPU: nothing to read
        pass
    assert idle.peak_mib is None
