"""The benchmark run: every size x batch engine-only, end to end, host ceiling and
baseline, on one device, in one run (the report is ``bench.report.BenchReport``; its
markdown is ``bench.markdown``)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psicbatch.bench.machine import faster_configuration_advice, machine, memory_peak
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
from psicbatch.data.images import image_files
from psicbatch.data.synth import generate
from psicbatch.devices import resolve_device
from psicbatch.engines import Engine, load_engine
from psicbatch.engines.null_engine import NULL_OUTPUTS
from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.model import ModelConfig, count_flops

SIZE_PRESETS = {"ksdd": (1408, 512), "ksdd2": (640, 232), "dagm": (512, 512)}
END_TO_END_FILES = 400  # distinct files an end-to-end run cycles through
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
    on ``device`` (engine-only, end to end, baseline and host ceiling)."""
    device = resolve_device(device)
    template = load_engine(engine_dir, device) if engine_dir is not None else None
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path is not None else None
    results: list[EngineOnlyRow] = []
    baselines: dict[str, dict[str, Any]] = {}
    end_to_end_results: dict[str, dict[str, Any]] = {}
    host: list[dict[str, Any]] = []

    def open_at(size: tuple[int, int]) -> Engine:
        spec = EngineSpec(checkpoint=checkpoint_path, precision=precision, input_size=size)
        return template or open_engine(spec, device, max(plan.batches))

    opening = time.perf_counter()
    first = open_at(plan.sizes[0][1])
    open_seconds = time.perf_counter() - opening  # cold start: load, prepare, warm up
    chosen = first.manifest  # every size runs the same backend and precision
    ceiling = engine_ceiling(
        chosen.backend, chosen.precision, device, seconds=min(6.0, plan.seconds)
    )
    for index, (name, size) in enumerate(plan.sizes):
        engine = first if index == 0 else open_at(size)
        gflop = count_flops(ModelConfig(**engine.manifest.model), *size) / 1e9
        for batch in plan.batches:
            measured = engine_only(engine, size, batch, plan.seconds)
            results.append(
                EngineOnlyRow.measured(
                    name,
                    size,
                    batch,
                    (engine.manifest.backend, engine.manifest.precision),
                    gflop,
                    measured,
                    float(ceiling["gflops"]),
                )
            )
            if progress:
                progress(f"{name} batch {batch}: {measured.throughput:.2f} images/s")
        if plan.end_to_end:
            end_to_end_results[name] = _end_to_end(
                results[-len(plan.batches) :],
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
            with tempfile.TemporaryDirectory() as folder:
                for outputs in NULL_OUTPUTS:
                    host.append(
                        host_ceiling(
                            size,
                            outputs,
                            plan.host_batch,
                            min(10.0, plan.seconds / 2),
                            device,
                            Path(folder) / outputs,
                        )
                    )
                    if progress:
                        progress(
                            f"{name} host ceiling, {outputs} outputs: "
                            f"{host[-1]['throughput_items_per_s']:.0f} images/s"
                        )
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
        ),
        ceiling=ceiling,
        results=results,
        baseline=baselines,
        end_to_end=end_to_end_results,
        host_ceiling=host,
        summary=summarize(results, baselines, end_to_end_results),
        memory_peak=memory_peak(),
    )


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
    measurement time of work at engine-only speed (``plan.seconds``: 20 s by default, at
    least three batches), next to the run's decoder alone on the same files. Up to
    ``END_TO_END_FILES`` distinct files are generated and cycled through."""
    best = max(measured, key=lambda r: r.throughput_items_per_s)
    batch = best.batch
    count = int(min(MAX_END_TO_END, max(3 * batch, best.throughput_items_per_s * plan.seconds)))
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
            else generate(Path(folder) / "images", distinct, size, defect_rate=0.3, seed=2)
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
