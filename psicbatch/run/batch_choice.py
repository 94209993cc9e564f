"""The batch a run takes where none is given (``--batch-size auto``, the default).

On a GPU, ``DEFAULT_BATCH_SIZE`` (8), the batch TensorRT engines are tuned for. On a CPU,
as many images as make 512x512's pixels, at least 1 and at most 8: there a batch saves
next to nothing per image (each image is seconds of arithmetic) while its activations
outgrow the caches, and every image of a batch waits for the last. On a 2-core AMD EPYC
with AVX2 only, the paper's network ran 5-8% more images/s at batch 1 than at batch 8,
at 1408x512 and at 512x512, and a batch of 8 held each result about 19 s instead of 2.3
(``psicbatch bench --batch 1,2,8``: benchmarks/results/cpu-batch-avx2-epyc-2/).
"""

from __future__ import annotations

from psicbatch.engines.spec import EngineSpec, engine_input_size
from psicbatch.run.options import DEFAULT_BATCH_SIZE

CPU_PIXELS = 512 * 512  # a CPU batch's images hold at most this many pixels together
ON_A_GPU = (DEFAULT_BATCH_SIZE, "on a GPU")


def chosen_batch_size(spec: EngineSpec, device: str) -> tuple[int, str]:
    """The batch for ``spec``'s engine on ``device`` ("cpu" or "cuda:N"), and why; the
    engine's input size is read only where it counts, on the CPU."""
    return ON_A_GPU if device != "cpu" else batch_for_size(engine_input_size(spec), device)


def batch_for_size(input_size: tuple[int, int], device: str) -> tuple[int, str]:
    """The batch for an engine of ``input_size`` (height, width) on ``device``, and why."""
    if device != "cpu":
        return ON_A_GPU
    height, width = input_size
    batch = max(1, min(DEFAULT_BATCH_SIZE, CPU_PIXELS // (height * width)))
    return batch, f"{height}x{width} inputs on a CPU: up to 512x512's pixels a batch"
