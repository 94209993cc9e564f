"""Where the paper's network spends a GPU's time: CUDA time per convolution shape.

    python benchmarks/gpu_kernels.py [--precision fp16] [--batch 8] [--size 1408x512]
    python benchmarks/gpu_kernels.py --device cpu --precision fp32 --width 0.125 --size 128x128

Opens the torch engine as ``psicbatch run`` does (BatchNorm folded, half-precision weights,
channels_last, cuDNN's kernel choice at open), profiles a few calls and prints the
convolutions grouped by input shapes, most device time first, with the TFLOP/s each
reached. It says which layer keeps the engine from the GPU's matrix-product rate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from psicbatch.bench.measurements import gpu_timed
from psicbatch.checkpoint import save_checkpoint, untrained_checkpoint
from psicbatch.engines import torch_engine
from psicbatch.engines.base import Engine
from psicbatch.engines.cuda_graphs import GraphedForward
from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.engines.torch_engine import TorchEngine
from psicbatch.model import ModelConfig

CALLS = 5


def conv_tflops(shapes: list[list[int]], device_us: float, count: int) -> float:
    """Achieved TFLOP/s of ``count`` runs of a convolution from its profiled input and
    weight shapes: every input pixel meets every weight once ('same' padding; a stride-2
    transposed convolution scatters each input pixel over its kernel, the same count).
    The weight's first two dimensions are output x input channels for a convolution and
    input x output for a transposed one: their product is the same either way."""
    (batch, _, height, width), (first, second, kh, kw) = shapes[0], shapes[1]
    flop = 2 * batch * height * width * first * second * kh * kw * count
    return flop / (device_us * 1e-6) / 1e12


def engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine the GPU scripts open (this one and gpu_cold_start.py)."""
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", default="1408x512")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--device", default="cuda:0", help="cpu: the same steps, CPU times")


def open_untrained(args: argparse.Namespace) -> tuple[Engine, tuple[int, int], float]:
    """The torch engine of an untrained network (cost does not depend on the weights) at
    ``args``' size and largest batch, its input size and the seconds it took to open."""
    # Its layers as a GPU engine has them, also on a CPU (the dry run), where the engine
    # would fuse each ReLU into its convolution.
    torch_engine.fusion_works = lambda dtype: False  # type: ignore[assignment]
    height, width = (int(n) for n in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        checkpoint = untrained_checkpoint(ModelConfig(width=args.width), (height, width))
        save_checkpoint(checkpoint, path)
        spec = EngineSpec(checkpoint=path, precision=args.precision)
        began = time.perf_counter()
        engine = open_engine(spec, args.device, args.batch)
    return engine, (height, width), time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_arguments(parser)
    args = parser.parse_args()
    on_gpu = args.device != "cpu"
    engine, size, _ = open_untrained(args)
    images = torch.rand(args.batch, 1, *size, device=args.device)
    engine.infer(images)
    # The operators (and their input shapes) are CPU-side events; on a GPU each one also
    # sums the device time of the kernels it launched. The engine's CUDA graph would hide
    # its kernels from the profiler: the profile runs the eager forward pass.
    assert isinstance(engine, TorchEngine)
    forward = engine.forward
    if isinstance(forward, GraphedForward):
        forward = forward.forward
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities, record_shapes=True) as prof, torch.inference_mode():
        for _ in range(CALLS):
            forward(images.to(memory_format=engine.memory_format))
        if on_gpu:
            torch.cuda.synchronize()
    events = prof.key_averages(group_by_input_shape=True)

    def spent(event: Any) -> float:  # microseconds on the device the engine runs on
        return float(event.device_time_total if on_gpu else event.cpu_time_total)

    if on_gpu:  # the whole call by CUDA events; the graph replayed, as runs do
        total_us = gpu_timed(lambda: engine.infer(images), torch.device(args.device))() * 1e6
        total_us *= CALLS
    else:
        total_us = float(sum(e.self_cpu_time_total for e in events))
    convolutions = [e for e in events if e.key == "aten::convolution" and e.input_shapes]
    convolutions.sort(key=spent, reverse=True)
    print(f"{args.device}, {args.precision}, batch {args.batch}, {args.size}, width {args.width}:")
    what = "device time per call (CUDA graph)" if on_gpu else "CPU time per call"
    print(f"{total_us / CALLS / 1e3:.1f} ms of {what}; convolutions in eager calls:\n")
    # Layers of one shape (several in PSIC-Net) are grouped: a row sums them.
    print("| input | weight | layers | ms per call | share | TFLOP/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for event in convolutions[:12]:
        shapes, us = event.input_shapes, spent(event)
        print(
            f"| {shapes[0]} | {shapes[1]} | {event.count // CALLS} | {us / CALLS / 1e3:.2f} "
            f"| {us / total_us:.0%} | {conv_tflops(shapes, us, event.count):.1f} |"
        )


if __name__ == "__main__":
    main()
