"""Cold start against steady state of the torch engine, with and without cuDNN's search.

    python benchmarks/gpu_cold_start.py [--precision fp16] [--batch 8] [--size 1408x512]
    python benchmarks/gpu_cold_start.py --device cpu --precision fp32 --width 0.125 --size 128x128

On a GPU the torch engine lets cuDNN time its algorithms for every layer's shape when it
opens (``torch.backends.cudnn.benchmark``): the fastest kernels, at the price of a slow
start (an engine took 86 s to open at batch 32 on an H200, likely mostly this).
``PSICBATCH_CUDNN_SEARCH=0`` takes cuDNN's heuristic choice instead. Each setting runs in
a fresh process (cuDNN remembers its choices within one), which opens the engine (timed),
then measures engine-only images/s by CUDA events; the table says what each start costs
and what it gives.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from gpu_kernels import engine_arguments, open_untrained

from psicbatch.bench.measurements import gpu_timed
from psicbatch.engines.torch_engine import CUDNN_SEARCH_ENV

CALLS = 20  # timed calls of the engine after it opened


def measure_once(args: argparse.Namespace) -> dict[str, float]:
    """Open the engine and time it: run in a child process, one per setting."""
    engine, size, opened = open_untrained(args)
    device = torch.device(args.device)
    images = torch.rand(args.batch, 1, *size, device=device)
    for _ in range(2):  # warm: on a GPU the engine opened with this batch's graph
        engine.infer(images)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        seconds = sum(gpu_timed(lambda: engine.infer(images), device)() for _ in range(CALLS))
    else:
        first = time.perf_counter()
        for _ in range(CALLS):
            engine.infer(images)
        seconds = time.perf_counter() - first
    return {"open_s": opened, "images_per_s": args.batch * CALLS / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_arguments(parser)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_once(args)))
        return
    print(
        f"{args.device}, {args.precision}, batch {args.batch}, {args.size}, width {args.width}:\n"
    )
    print("| cuDNN's choice | engine open, s | engine-only images/s |")
    print("| --- | --- | --- |")
    for setting, label in (("1", "searched at open"), ("0", "heuristic")):
        environment = {**os.environ, CUDNN_SEARCH_ENV: setting}
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--child"],
            capture_output=True,
            text=True,
            env=environment,
            check=False,
        )
        if child.returncode != 0:
            print(f"| {label} | failed: {child.stderr.strip().splitlines()[-1:]} | - |")
            continue
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"| {label} | {result['open_s']:.1f} | {result['images_per_s']:.1f} |")


if __name__ == "__main__":
    main()
