"""The benchmark run: every size x batch engine-only, end to end, host ceiling and
baseline, on one device, in one run (the report is ``bench.report.BenchReport``; its
markdown is ``bench.markdown``)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from psicbatch.bench.machine import (
    DriverMemorySampler,
    driver_used_mib,
    faster_configuration_advice,
    machine,
    memory_peak,
)
from psicbatch.bench.measurements import (
    decode_only,
    end_to_end,
    engine_ceiling,
    engine_only,
    host_ceiling,
    research_baseline,
)
from psicbatch.bench.report import (
    BenchReport,
    EngineChoice,
    EngineOnlyRow,
    first_call_ms,
    summarize,
)
from psicbatch.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, untrained_checkpoint
from psicbatch.contention import contention, cpu_times
from psicbatch.data.images import image_files
from psicbatch.data.synth import generate, generate_many
from psicbatch.devices import resolve_device
from psicbatch.engines.base import Engine
from psicbatch.engines.loading import load_engine
from psicbatch.engines.manifest import large_kernel_note
from psicbatch.engines.null_engine import NULL_OUTPUTS
from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.model import ModelConfig, count_flops
from psicbatch.run.runner import STEADY_BATCHES

END_TO_END_FILES = 400  # distinct files an end-to-end run cycles through
SWEEP_LIMITS = {"cpu": 32, "cuda": 1024}  # --batch sweep's largest batch per device type
PLATEAU = 0.03  # a sweep stops after two doublings that each gained less than this
MAX_END_TO_END = 200_000  # images, whatever the speed


@dataclass(frozen=True)
class BenchPlan:
    sizes: tuple[tuple[str, tuple[int, int]], ...]
    batches: tuple[int, ...]
    seconds: float = 20.0
    baseline: bool = True
    images: Path | None = None
    end_to_end: bool = True
    host_ceiling: bool = True
    host_batch: int = 32
    sweep: bool = False  # batches double until memory runs out or throughput levels off
    # The end-to-end image threshold; 1 for an untrained network, whose masks are noise:
    # every image is then judged defect-free, as on a healthy line, and encoding noise
    # masks does not decide the throughput (the host ceiling measures defective outputs).
    threshold: float | None = None


def random_checkpoint(width: float, folder: Path) -> Path:
    """An untrained checkpoint of the given width: cost, not accuracy, is what is measured."""
    path = folder / f"random-width-{width}.pt"
    save_checkpoint(untrained_checkpoint(ModelConfig(width=width)), path)
    return path


def run_benchmark(
    plan: BenchPlan,
    checkpoint_path: Path | None,
    engine_dir: Path | None,
    precision: str,
    device: str = "auto",
    progress: Any = None,
) -> BenchReport:
    """Measure every size x batch, the baseline per size and the ceiling, in one run, all
    on ``device`` (engine-only, end to end, baseline and host ceiling), with the GPU
    memory the driver counts sampled throughout and what else used the CPUs meanwhile."""
    device = resolve_device(device)
    read = partial(driver_used_mib, device) if device.startswith("cuda") else None
    before = cpu_times()
    with DriverMemorySampler(read) as sampler:
        report = _measure(plan, checkpoint_path, engine_dir, precision, device, progress)
    report.contention = contention(before, cpu_times())
    report.memory_peak = memory_peak(sampler.peak_mib)
    return report


def _measure(
    plan: BenchPlan,
    checkpoint_path: Path | None,
    engine_dir: Path | None,
    precision: str,
    device: str,
    progress: Any,
) -> BenchReport:
    template = load_engine(engine_dir, device) if engine_dir is not None else None
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path is not None else None
    results: list[EngineOnlyRow] = []
    baselines: dict[str, dict[str, Any]] = {}
    end_to_end_results: dict[str, dict[str, Any]] = {}
    host: list[dict[str, Any]] = []

    def open_at(size: tuple[int, int], max_batch: int) -> Engine:
        spec = EngineSpec(checkpoint=checkpoint_path, precision=precision, input_size=size)
        return template or open_engine(spec, device, max_batch)

    opening_batch = 1 if plan.sweep else max(plan.batches)  # a sweep reopens per batch
    opening = time.perf_counter()
    first = open_at(plan.sizes[0][1], opening_batch)
    open_seconds = time.perf_counter() - opening  # cold start: load, prepare, warm up
    chosen = first.manifest  # every size runs the same backend and precision
    ceiling = engine_ceiling(
        chosen.backend, chosen.precision, device, seconds=min(6.0, plan.seconds)
    )
    sweep_stops: dict[str, str] = {}
    for index, (name, size) in enumerate(plan.sizes):
        engine = first if index == 0 else open_at(size, opening_batch)
        rows, engine, stop = _engine_only_rows(
            name,
            size,
            engine,
            partial(open_at, size),
            template is not None,
            plan,
            float(ceiling["gflops"]),
            progress,
        )
        if stop is not None:
            sweep_stops[name] = stop
        results += rows
        if plan.end_to_end and rows:
            end_to_end_results[name] = _end_to_end(
                rows,
                engine,
                checkpoint_path,
                engine_dir,
                precision,
                size,
                plan,
                device,
            )
            if progress:
                e2e = end_to_end_results[name]
                progress(
                    f"{name} end to end (batch {e2e['batch']}): "
                    f"{e2e['throughput_items_per_s']:.2f} images/s"
                )
        if plan.host_ceiling:
            host += _host_ceilings(name, size, plan, device, progress)
        if plan.baseline and checkpoint is not None:
            baselines[name] = _baseline(checkpoint, size, plan, device)
            if progress:
                progress(
                    f"{name} baseline: {baselines[name]['throughput_items_per_s']:.2f} images/s"
                )
    return BenchReport(
        machine=machine(),
        engine=EngineChoice(
            chosen.backend,
            chosen.precision,
            chosen.selection,
            faster_configuration_advice(chosen, device),
            open_seconds,
            first_call_ms(results),
            large_kernel_note(chosen.backend_details),
        ),
        ceiling=ceiling,
        results=results,
        baseline=baselines,
        end_to_end=end_to_end_results,
        host_ceiling=host,
        summary=summarize(results, baselines, end_to_end_results),
        memory_peak={},  # run_benchmark's, once every measurement is done
        sweep=sweep_stops,
    )


def _host_ceilings(
    name: str, size: tuple[int, int], plan: BenchPlan, device: str, progress: Any
) -> list[dict[str, Any]]:
    """The host ceiling at ``size`` for each kind of null output (``host_ceiling``)."""
    measured, seconds = [], min(10.0, plan.seconds / 2)
    with tempfile.TemporaryDirectory() as folder:
        for outputs in NULL_OUTPUTS:
            result = host_ceiling(
                size, outputs, plan.host_batch, seconds, device, Path(folder) / outputs
            )
            measured.append(result)
            if progress:
                progress(
                    f"{name} host ceiling, {outputs} outputs: "
                    f"{result['throughput_items_per_s']:.0f} images/s"
                )
    return measured


def sweep_batches(device: str) -> tuple[int, ...]:
    """--batch sweep's ladder: 1, 2, 4, ... up to the device type's limit (on a CPU a
    batch that does not fit is not an error torch can catch, so the limit is low)."""
    limit = SWEEP_LIMITS["cuda" if device.startswith("cuda") else "cpu"]
    return tuple(2**power for power in range(limit.bit_length()) if 2**power <= limit)


def levelled_off(throughputs: list[float]) -> bool:
    """True when each of the last two doublings gained less than PLATEAU."""
    if len(throughputs) < 3:
        return False
    a, b, c = throughputs[-3:]
    return b < a * (1 + PLATEAU) and c < b * (1 + PLATEAU)


def _engine_only_rows(
    name: str,
    size: tuple[int, int],
    engine: Engine,
    open_for: Callable[[int], Engine],
    fixed: bool,
    plan: BenchPlan,
    ceiling_gflops: float,
    progress: Any,
) -> tuple[list[EngineOnlyRow], Engine, str | None]:
    """One size's engine-only rows, the engine last measured and, for a sweep, why it
    stopped. A sweep opens a checkpoint's engine for each batch (sized and warmed for it
    alone); a built engine (``fixed``) stops at its largest batch."""
    gflop = count_flops(ModelConfig(**engine.manifest.model), *size) / 1e9
    rows: list[EngineOnlyRow] = []
    for batch in plan.batches:
        if plan.sweep and fixed and batch > engine.batch_range[1]:
            return rows, engine, f"the engine's largest batch ({engine.batch_range[1]})"
        if plan.sweep and not fixed and batch > 1:
            engine = open_for(batch)
        try:
            measured = engine_only(engine, size, batch, plan.seconds)
        except torch.cuda.OutOfMemoryError:
            if not plan.sweep:
                raise
            torch.cuda.empty_cache()
            return rows, engine, f"out of memory at batch {batch}"
        backend = (engine.manifest.backend, engine.manifest.precision)
        rows.append(
            EngineOnlyRow.measured(name, size, batch, backend, gflop, measured, ceiling_gflops)
        )
        if progress:
            progress(f"{name} batch {batch}: {measured.throughput:.2f} images/s")
        if plan.sweep and levelled_off([row.throughput_items_per_s for row in rows]):
            return rows, engine, f"images/s gained under {PLATEAU:.0%} twice in a row"
    stop = f"the sweep's largest batch here ({plan.batches[-1]})" if plan.sweep else None
    return rows, engine, stop


def _end_to_end(
    measured: list[EngineOnlyRow],
    engine: Engine,
    checkpoint_path: Path | None,
    engine_dir: Path | None,
    precision: str,
    size: tuple[int, int],
    plan: BenchPlan,
    device: str,
) -> dict[str, Any]:
    """The run path at the batch size the engine did best with, for about the
    measurement time of work at engine-only speed (``plan.seconds``: 20 s by default; at
    least ``STEADY_BATCHES`` batches after the first), next to the run's decoder alone on
    the same files. Up to ``END_TO_END_FILES`` distinct files are generated and cycled
    through."""
    best = max(measured, key=lambda r: r.throughput_items_per_s)
    batch = best.batch
    count = int(
        min(
            MAX_END_TO_END,
            max((1 + STEADY_BATCHES) * batch, best.throughput_items_per_s * plan.seconds),
        )
    )
    spec = EngineSpec(
        engine_dir=engine_dir,
        checkpoint=checkpoint_path,
        precision=precision,
        input_size=None if engine_dir else size,
    )
    distinct = min(count, END_TO_END_FILES)
    with tempfile.TemporaryDirectory() as folder:
        files = (
            image_files(plan.images)[:distinct]
            if plan.images
            else generate_many(Path(folder) / "images", distinct, size, defect_rate=0.3, seed=2)
        )
        cycled = [files[index % len(files)] for index in range(count)]
        result = end_to_end(spec, cycled, batch, Path(folder), device, threshold=plan.threshold)
        decoding = decode_only(files, engine.manifest.engine_preprocessing(), batch, device)
    result["share_of_engine_only"] = result["throughput_items_per_s"] / best.throughput_items_per_s
    result["decode_only_items_per_s"] = decoding["throughput_items_per_s"]
    result["share_of_decode_only"] = (
        result["throughput_items_per_s"] / decoding["throughput_items_per_s"]
    )
    return result


def _baseline(
    checkpoint: Checkpoint, size: tuple[int, int], plan: BenchPlan, device: str
) -> dict[str, Any]:
    if plan.images is not None:
        files = image_files(plan.images)[:32]
        return research_baseline(checkpoint, files, size, plan.seconds, device).to_dict()
    with tempfile.TemporaryDirectory() as folder:
        files = generate(Path(folder), 8, size, defect_rate=0.5, seed=1)
        return research_baseline(checkpoint, files, size, plan.seconds, device).to_dict()


STAGES = ("decode+preprocess", "in series", "inference", "postprocess", "rows", "write")


def engine_busy(result: dict[str, Any]) -> float:
    """Share of an end-to-end run's time the engine was computing, from that run alone."""
    inference = result["stage_seconds_per_image"].get("inference", 0.0)
    return result["throughput_items_per_s"] * inference
