"""What ``psicbatch bench`` times: the engine alone, the research-code baseline, and the
machine's own matrix-product ceiling, all in one run so they can be compared as ratios."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from psicbatch.bench.stats import Measurement, measure
from psicbatch.checkpoint import Checkpoint
from psicbatch.data.images import read_image
from psicbatch.engines import Engine
from psicbatch.predict import autocast
from psicbatch.preprocess import normalize, resize_image
from psicbatch.run.runner import EngineSpec, RunOptions, run

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def matmul_ceiling(
    precision: str, device: str = "cpu", size: int = 2048, seconds: float = 6.0
) -> dict[str, float | str]:
    """GFLOP/s of a large square matrix product in ``precision`` (int8 engines: bf16)."""
    dtype = DTYPES.get(precision, torch.bfloat16)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)

    def call() -> None:
        torch.matmul(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    result = measure(call, 1, warmup_calls=2, window_seconds=seconds / 4, max_seconds=seconds)
    return {
        "precision": str(dtype).removeprefix("torch."),
        "size": size,
        "gflops": 2 * size**3 * result.throughput / 1e9,
        "stable": result.stable,
    }


def engine_only(engine: Engine, size: tuple[int, int], batch: int, seconds: float) -> Measurement:
    """The engine on ready-made input: the model stage with nothing around it."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch, engine.manifest.channels, *size)).astype(np.float32)
    return measure(
        lambda: engine.infer(images), batch, window_seconds=seconds / 6, max_seconds=seconds
    )


def research_baseline(
    checkpoint: Checkpoint, files: list[Path], size: tuple[int, int], seconds: float
) -> Measurement:
    """How research code runs inference: PIL decode, torch fp32 eager, one image at a time."""
    model = checkpoint.build_model()
    channels = checkpoint.model_config.in_channels
    position = [0]

    def one_image() -> None:
        path = files[position[0] % len(files)]
        position[0] += 1
        image = resize_image(read_image(path, channels), size)
        tensor = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
        with torch.no_grad(), autocast(torch.device("cpu"), "fp32"):
            seg, _ = model(normalize(tensor, checkpoint.preprocessing))
        torch.sigmoid(seg).numpy()

    return measure(one_image, 1, warmup_calls=1, window_seconds=seconds / 6, max_seconds=seconds)


def end_to_end(spec: EngineSpec, files: list[Path], batch: int, folder: Path) -> dict[str, Any]:
    """The whole ``psicbatch run`` path on ``files``: decode, preprocess, inference, masks,
    RLE and Parquet writing."""
    summary = run(files, spec, RunOptions(out=folder / "results.parquet", batch_size=batch))
    per_image = {
        stage: seconds / summary.images for stage, seconds in summary.stage_seconds.items()
    }
    return {
        "images": summary.images,
        "batch": batch,
        "decoder": summary.decoder,
        "throughput_items_per_s": summary.steady_throughput,
        "seconds_including_startup": summary.seconds,
        "stage_seconds_per_image": per_image,
    }
