"""The benchmark report, typed: what ``bench`` measures, writes as ``bench.json``, prints
and plots, and what ``bench --compare`` reads back. Field names are the JSON keys."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from psicbatch.bench.stats import Measurement
from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path, regular_file_bytes

TARGET_SECONDS = (1.0, 2.0)  # the industrial per-image budget the paper cites


@dataclass(frozen=True)
class EngineOnlyRow:
    """One size x batch of the engine alone (``Measurement.to_dict`` fields included)."""

    size_name: str
    size: tuple[int, int]
    batch: int
    backend: str
    precision: str
    gflop_per_image: float
    items_per_call: int
    warmup: dict[str, Any] | None
    latency_per_call: dict[str, Any]
    throughput_items_per_s: float
    windows: int
    window_rates: list[float]
    stable: bool
    seconds_per_image: float | None
    achieved_gflops: float
    ceiling_share: float
    first_call_ms: float | None = None  # the first warm-up call (reports before: absent)

    @classmethod
    def measured(
        cls,
        size_name: str,
        size: tuple[int, int],
        batch: int,
        engine: tuple[str, str],
        gflop_per_image: float,
        measurement: Measurement,
        ceiling_gflops: float,
    ) -> EngineOnlyRow:
        achieved = measurement.throughput * gflop_per_image
        return cls(
            size_name=size_name,
            size=size,
            batch=batch,
            backend=engine[0],
            precision=engine[1],
            gflop_per_image=gflop_per_image,
            **measurement.to_dict(),
            seconds_per_image=1 / measurement.throughput if measurement.throughput else None,
            achieved_gflops=achieved,
            ceiling_share=achieved / ceiling_gflops,
        )


@dataclass(frozen=True)
class SizeSummary:
    """Per size: the best engine throughput, batch-1 latency, speedup and verdict."""

    size_name: str
    size: tuple[int, int]
    best_images_per_s: float
    best_batch: int
    latency_s_per_image: float
    ceiling_share: float
    baseline_images_per_s: float | None
    speedup_vs_baseline: float | None
    end_to_end_images_per_s: float | None
    end_to_end_share: float | None
    verdict: str

    @property
    def label(self) -> str:
        size = f"{self.size[0]}x{self.size[1]}"
        return size if self.size_name == size else f"{self.size_name} ({size})"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SizeSummary:
        values: dict[str, Any] = {f.name: data.get(f.name) for f in fields(cls)}
        return cls(**{**values, "size": tuple(data["size"])})


@dataclass(frozen=True)
class EngineChoice:
    """The engine measured, why it was chosen, and a faster configuration if one exists."""

    backend: str
    precision: str
    selection: str | None
    advice: str | None
    open_seconds: float | None = None  # cold start: opening (loading, preparing, warming)
    first_call_ms: float | None = None  # the first engine call, before any warm-up
    computed: str = ""  # how, where that differs by machine (large_kernel_note)


@dataclass
class BenchReport:
    machine: dict[str, Any]
    engine: EngineChoice | None
    ceiling: dict[str, Any]
    results: list[EngineOnlyRow]
    baseline: dict[str, dict[str, Any]] = field(default_factory=dict)
    end_to_end: dict[str, dict[str, Any]] = field(default_factory=dict)
    host_ceiling: list[dict[str, Any]] = field(default_factory=list)
    summary: list[SizeSummary] = field(default_factory=list)
    memory_peak: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    sweep: dict[str, str] = field(default_factory=dict)  # --batch sweep: why each size stopped
    contention: dict[str, Any] | None = None  # what else used the CPUs (``contention``)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> BenchReport:
        """A ``bench.json`` file, or a one-line error naming it."""
        try:
            return cls.from_dict(json.loads(regular_file_bytes(path)))
        except OSError as error:
            raise PsicbatchError(
                f"{readable_path(path)}: cannot be read ({error.strerror or error})"
            ) from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:  # JSON, fields
            raise PsicbatchError(
                f"{readable_path(path)}: not a psicbatch bench.json ({type(error).__name__}: "
                f"{error})"
            ) from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchReport:
        """A ``bench.json``, also one written before the engine or sections were recorded."""
        engine = data.get("engine")
        return cls(
            machine=data["machine"],
            engine=EngineChoice(**engine) if engine else None,
            ceiling=data["ceiling"],
            results=[
                EngineOnlyRow(**{**row, "size": tuple(row["size"])}) for row in data["results"]
            ],
            baseline=data.get("baseline", {}),
            end_to_end=data.get("end_to_end", {}),
            host_ceiling=data.get("host_ceiling", []),
            summary=[SizeSummary.from_dict(row) for row in data["summary"]],
            memory_peak=data.get("memory_peak", {}),
            command=data.get("command"),
            sweep=data.get("sweep", {}),
            contention=data.get("contention"),
        )


def first_call_ms(results: list[EngineOnlyRow]) -> float | None:
    """The first call of the run's first configuration (on a GPU: the mean of its first
    launches, timed together)."""
    return results[0].first_call_ms if results else None


def summarize(
    results: list[EngineOnlyRow],
    baselines: dict[str, dict[str, Any]],
    end_to_end: dict[str, dict[str, Any]],
) -> list[SizeSummary]:
    """Per size: best engine throughput, batch-1 latency, speedup and verdict."""
    rows = []
    for name in dict.fromkeys(r.size_name for r in results):
        mine = [r for r in results if r.size_name == name]
        best = max(mine, key=lambda r: r.throughput_items_per_s)
        single = next((r for r in mine if r.batch == 1), None)
        latency = (
            single.latency_per_call["p50"] / 1000
            if single
            else 1 / best.throughput_items_per_s
            if best.throughput_items_per_s
            else float("inf")
        )
        base = baselines.get(name, {}).get("throughput_items_per_s")
        rows.append(
            SizeSummary(
                size_name=name,
                size=best.size,
                best_images_per_s=best.throughput_items_per_s,
                best_batch=best.batch,
                latency_s_per_image=latency,
                ceiling_share=best.ceiling_share,
                baseline_images_per_s=base,
                speedup_vs_baseline=best.throughput_items_per_s / base if base else None,
                end_to_end_images_per_s=end_to_end.get(name, {}).get("throughput_items_per_s"),
                end_to_end_share=end_to_end.get(name, {}).get("share_of_engine_only"),
                verdict=verdict(latency),
            )
        )
    return rows


def verdict(seconds: float) -> str:
    low, high = TARGET_SECONDS
    if seconds <= low:
        return f"meets the {low:g} s target"
    if seconds <= high:
        return f"meets the {high:g} s target"
    return f"misses the {high:g} s target"


@dataclass(frozen=True)
class SizeComparison:
    size: str
    images_per_s: tuple[float, float]
    latency_s: tuple[float, float]

    @property
    def ratio(self) -> float:
        """Second report's throughput over the first's."""
        return self.images_per_s[1] / self.images_per_s[0]


def compare_reports(first: BenchReport, second: BenchReport) -> list[SizeComparison]:
    """Per size present in both reports: throughput and latency side by side."""
    other = {row.size_name: row for row in second.summary}
    return [
        SizeComparison(
            row.size_name,
            (row.best_images_per_s, match.best_images_per_s),
            (row.latency_s_per_image, match.latency_s_per_image),
        )
        for row in first.summary
        if (match := other.get(row.size_name)) is not None
    ]
