"""Tiled inspection of large images on the CPU: images/s, megapixels/s and peak memory.

    python benchmarks/tiled_throughput.py OUT_DIR [--count 4] [--sizes 1500x6000,4000x20000]

Generated line-scan-like surfaces (one thin crack in every other image) are inspected by
``psicbatch run``'s code path with the bundled demo model applied in 128x128 tiles
(overlap 16), on the CPU, with ``--precision auto``, batch 1; each size is inspected in a
fresh process, so its peak memory is the inspection's alone (generating an 80-megapixel
surface in float64 takes more than inspecting it). Writes tiled.json and tiled.md with
the command, the CPU's ISA line and, per size, tiles per image, images/s, megapixels/s,
the inspecting process's peak RSS and the post-processing stage's time per image
(stitching, masks, run boundaries).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from psicbatch.assets import demo_model_path
from psicbatch.checkpoint import load_checkpoint, save_checkpoint
from psicbatch.data.synth import defect_mask, texture
from psicbatch.engines.spec import EngineSpec
from psicbatch.hardware import cpu_precisions
from psicbatch.run.options import RunOptions
from psicbatch.run.runner import run
from psicbatch.tiles import TileGrid

OVERLAP = 16


def tiled_demo(path: Path) -> Path:
    checkpoint = load_checkpoint(demo_model_path())
    checkpoint.preprocessing = replace(checkpoint.preprocessing, tile_overlap=OVERLAP)
    return save_checkpoint(checkpoint, path)


def line_scan(size: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    surface = texture(rng, "grain", *size)
    if seed % 2:
        top, left = rng.integers(0, size[0] - 128), rng.integers(0, size[1] - 128)
        surface[top : top + 128, left : left + 128] -= 60 * defect_mask(rng, "scratch", 128, 128)
    return np.clip(surface, 0, 255).astype(np.uint8)


def inspect(folder: Path) -> dict:
    """Inspect the images in ``folder`` (all of one size) and measure, in this process."""
    files = sorted(folder.glob("line-*.png"))
    with Image.open(files[0]) as first:
        size = (first.height, first.width)
    model = tiled_demo(folder / "tiled.pt")
    options = RunOptions(out=folder / "results.parquet", batch_size=1, devices=("cpu",))
    began = time.perf_counter()
    summary = run(files, EngineSpec(checkpoint=model), options)
    seconds = time.perf_counter() - began
    tiles = len(TileGrid(size, (128, 128), OVERLAP).origins)
    megapixels = size[0] * size[1] / 1e6
    return {
        "size": list(size),
        "images": summary.images,
        "defective": summary.defects,
        "tiles_per_image": tiles,
        "engine": summary.engine.split(" (")[0],  # backend, precision, device
        "seconds_including_startup": seconds,
        "images_per_s": summary.steady_throughput,
        "megapixels_per_s": summary.steady_throughput * megapixels,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # stitching, masks and run boundaries: the post-processing stage's own time
        "postprocess_ms_per_image": 1000 * summary.stage_seconds["postprocess"] / summary.images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--sizes", default="1500x6000,4000x20000", help="HxW, comma-separated")
    parser.add_argument("--inspect", type=Path, help=argparse.SUPPRESS)  # a child: one size
    args = parser.parse_args()
    if args.inspect:
        print(json.dumps(inspect(args.inspect)))
        return
    results = []
    for size in args.sizes.split(","):
        height, width = map(int, size.split("x"))
        with tempfile.TemporaryDirectory() as folder:
            for seed in range(args.count):
                path = Path(folder) / f"line-{seed}.png"
                Image.fromarray(line_scan((height, width), seed)).save(path, compress_level=1)
            child = [sys.executable, __file__, str(args.out), "--inspect", folder]
            output = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(results[-1])
    report = {
        "command": " ".join(["python", "benchmarks/tiled_throughput.py", *sys.argv[1:]]),
        "cpu": cpu_precisions().describe(),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tiled.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Tiled inspection of large images (CPU)",
        "",
        f"Command: `{report['command']}`  ",
        f"CPU: {report['cpu']}",
        "",
        "| size (HxW) | tiles/image | engine | images/s | megapixels/s | peak RSS (MiB) "
        "| post-processing (ms/image) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['size'][0]}x{r['size'][1]} | {r['tiles_per_image']} | {r['engine']} "
            f"| {r['images_per_s']:.3f} | {r['megapixels_per_s']:.2f} | {r['peak_rss_mib']:.0f} "
            f"| {r['postprocess_ms_per_image']:.0f} |"
        )
    (args.out / "tiled.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
