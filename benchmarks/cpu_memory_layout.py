"""Contiguous against channels_last for the torch engine in fp32 on this CPU, one run.

The paper's network (untrained: cost does not depend on the weights), batch 1, best of a
few calls per layout, alternating layouts twice so drift shows. Decides the torch
engine's layout for fp32 on CPUs (``psicbatch/engines/torch_engine.py``).

Usage: python benchmarks/cpu_memory_layout.py OUT_FILE [--width 1] [--size 1408x512]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psicbatch.hardware import cpu_precisions  # noqa: E402
from psicbatch.model import ModelConfig, PSICNet  # noqa: E402


def best_seconds(model: torch.nn.Module, image: torch.Tensor, calls: int) -> float:
    with torch.inference_mode():
        model(image)  # warm-up
        times = []
        for _ in range(calls):
            began = time.perf_counter()
            model(image)
            times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--size", default="1408x512")
    parser.add_argument("--calls", type=int, default=2)
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    torch.manual_seed(0)
    model = PSICNet(ModelConfig(width=args.width)).eval()
    image = torch.rand(1, 1, height, width)
    lines = [
        f"# torch fp32 memory layout, width {args.width}, {args.size}, batch 1",
        "",
        f"CPU: {cpu_precisions().describe()}; torch {torch.__version__}.",
        f"Command: python {' '.join(sys.argv)}",
        "",
        "| round | contiguous s/image | channels_last s/image | channels_last / contiguous |",
        "| --- | --- | --- | --- |",
    ]
    for round_number in (1, 2):
        plain = best_seconds(model.to(memory_format=torch.contiguous_format), image, args.calls)
        last = best_seconds(
            model.to(memory_format=torch.channels_last),
            image.contiguous(memory_format=torch.channels_last),
            args.calls,
        )
        lines.append(f"| {round_number} | {plain:.3f} | {last:.3f} | {last / plain:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
