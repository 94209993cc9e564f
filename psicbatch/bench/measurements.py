"""What ``psicbatch bench`` times: the engine alone, the research-code baseline, and the
machine's own matrix-product ceiling, all in one run so they can be compared as ratios."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from psicbatch.bench.stats import Measurement, latency_summary, measure
from psicbatch.checkpoint import Checkpoint
from psicbatch.engines.base import Engine
from psicbatch.engines.registry import CPU_INT8_BACKENDS
from psicbatch.engines.spec import EngineSpec
from psicbatch.precision import DTYPES, cpu_auto
from psicbatch.preprocess import Preprocessing, load_tensor
from psicbatch.run.runner import RunOptions, run


def engine_ceiling(
    backend: str, precision: str, device: str = "cpu", seconds: float = 6.0
) -> dict[str, float | str]:
    """The ceiling an engine is compared with: the matrix product of the runtime and
    precision it runs (an int8 CPU engine's own runtime's int8 product)."""
    if precision == "int8" and device == "cpu" and backend in CPU_INT8_BACKENDS:
        from psicbatch.bench.int8_ceiling import int8_ceiling

        return int8_ceiling(backend, seconds=seconds)
    return matmul_ceiling(precision, device, seconds=seconds)


# On a GPU, launches between two CUDA events and one host wait: a sync after every call
# would leave the GPU idle between calls and measure latency, not throughput.
GPU_LAUNCHES_PER_SYNC = 10
CEILING_SIZES = {"cpu": 2048, "cuda": 8192}  # large enough to reach the peak on each


def gpu_timed(launch: Callable[[], object], device: torch.device) -> Callable[[], float]:
    """A call that launches ``launch`` GPU_LAUNCHES_PER_SYNC times between two CUDA
    events and returns the seconds per launch by the GPU's own clock."""

    def call() -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        stream = torch.cuda.current_stream(device)
        start.record(stream)
        for _ in range(GPU_LAUNCHES_PER_SYNC):
            launch()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / 1000 / GPU_LAUNCHES_PER_SYNC

    return call


def timed_calls(
    launch: Callable[[], object], device: torch.device, items: int, window: float, limit: float
) -> Measurement:
    """``launch`` measured as ``measure`` does (``window`` seconds per window, at most
    ``limit`` in all): one call at a time on the CPU, events around
    GPU_LAUNCHES_PER_SYNC launches on a GPU."""
    if device.type != "cuda":

        def call() -> None:
            launch()

        return measure(call, items, window_seconds=window, max_seconds=limit)
    return measure(
        gpu_timed(launch, device),
        items,
        window_seconds=window,
        max_seconds=limit,
        launches_per_call=GPU_LAUNCHES_PER_SYNC,
    )


def matmul_ceiling(
    precision: str, device: str = "cpu", size: int | None = None, seconds: float = 6.0
) -> dict[str, float | str]:
    """GFLOP/s of a large square torch matrix product in ``precision`` (an int8 precision
    that torch does not run natively falls back to the CPU's fastest native float)."""
    where = torch.device(device)
    size = size or CEILING_SIZES[where.type]
    dtype = DTYPES.get(precision) or DTYPES[cpu_auto().precision]
    a = torch.randn(size, size, device=where).to(dtype)
    b = torch.randn(size, size, device=where).to(dtype)
    result = timed_calls(lambda: torch.matmul(a, b), where, 1, seconds / 4, seconds)
    return {
        "precision": str(dtype).removeprefix("torch."),
        "size": size,
        "gflops": 2 * size**3 * result.throughput / 1e9,
        "stable": result.stable,
    }


def engine_only(engine: Engine, size: tuple[int, int], batch: int, seconds: float) -> Measurement:
    """The engine on ready-made input already on its device: the model stage alone."""
    generator = torch.Generator().manual_seed(0)
    shape = (batch, engine.manifest.channels, *size)
    images = torch.randn(shape, generator=generator).to(engine.device)
    return timed_calls(lambda: engine.infer(images), engine.device, batch, seconds / 6, seconds)


def research_baseline(
    checkpoint: Checkpoint,
    files: list[Path],
    size: tuple[int, int],
    seconds: float,
    device: str = "cpu",
) -> Measurement:
    """How research code runs inference: PIL decode, torch fp32 eager, one image at a time,
    on the same device as the engine it is compared with."""
    model = checkpoint.build_model().to(device)
    preprocessing = checkpoint.preprocessing.at_size(size)
    position = [0]

    def one_image() -> None:
        path = files[position[0] % len(files)]
        position[0] += 1
        tensor, _ = load_tensor(path, preprocessing)
        with torch.no_grad():
            seg, _ = model(tensor[None].to(device))
        torch.sigmoid(seg).cpu().numpy()

    return measure(one_image, 1, warmup_calls=1, window_seconds=seconds / 6, max_seconds=seconds)


def end_to_end(
    spec: EngineSpec,
    files: list[Path],
    batch: int,
    folder: Path,
    device: str,
    decoder: str = "auto",
    threshold: float | None = None,
) -> dict[str, Any]:
    """The whole ``psicbatch run`` path on ``files`` on ``device``: decode, preprocess,
    inference, masks, RLE and Parquet writing; the slowest stage is named."""
    options = RunOptions(
        out=folder / "results.parquet",
        batch_size=batch,
        devices=(device,),
        decoder=decoder,
        threshold=threshold,
    )
    summary = run(files, spec, options)
    per_image = {
        stage: seconds / summary.images for stage, seconds in summary.stage_seconds.items()
    }
    return {
        "images": summary.images,
        "batch": batch,
        "device": device,
        "decoder": summary.decoder,
        "threshold": threshold,
        "throughput_items_per_s": summary.steady_throughput,
        "seconds_including_startup": summary.seconds,
        "stage_seconds_per_image": per_image,
        "latency_per_image": latency_summary(summary.latencies) if summary.latencies else None,
        "bounded_by": max(per_image, key=lambda stage: per_image[stage]) if per_image else None,
    }


def decode_only(files: list[Path], preprocessing: Preprocessing, batch: int, device: str) -> dict:
    """The run's decoder alone on ``files`` (on ``device``), as many batches at once as a
    run decodes: the most a run can reach."""
    from psicbatch.cpus import available_cpus
    from psicbatch.run.decode import make_decoder
    from psicbatch.run.stages import staged

    chosen = make_decoder("auto", preprocessing, batch, available_cpus(), torch.device(device))
    chosen.decode(files[:batch])  # warm-up
    began = time.perf_counter()
    batches = [files[start : start + batch] for start in range(0, len(files), batch)]
    for _ in staged(batches, chosen.decode, workers=chosen.at_once):
        pass
    seconds = time.perf_counter() - began
    chosen.close()
    return {
        "images": len(files),
        "decoder": chosen.name,
        "throughput_items_per_s": len(files) / seconds,
    }


def host_ceiling(
    size: tuple[int, int], outputs: str, batch: int, seconds: float, device: str, folder: Path
) -> dict[str, Any]:
    """The whole run path with the null engine and decoding excluded: what the host side
    (upload, masks, RLE, rows, Parquet) can feed, whatever the GPU. A short probe sizes
    the measured run to about ``seconds``."""
    spec = EngineSpec(null_outputs=outputs, input_size=size)

    def measured(count: int, name: str) -> dict[str, Any]:
        paths = [Path(f"null/{index:07d}.png") for index in range(count)]
        return end_to_end(spec, paths, batch, folder / name, device, decoder="null")

    probe = measured(4 * batch, "probe")
    count = int(min(20000, max(8 * batch, probe["throughput_items_per_s"] * seconds)))
    result = measured(count, "measured")
    result["outputs"] = outputs
    result["size"] = list(size)
    return result
