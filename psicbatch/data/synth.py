"""DAGM-like synthetic surface images with exact defect masks, for tests and the demo.

Backgrounds are one of a few industrial-looking textures (blurred grain, brushed metal,
woven stripes); defects are ellipses, scratches or spot clusters, brighter or darker than
the surface. Output uses the ``folder`` layout: ``images/NAME.png`` and, for defective
images only, ``masks/NAME.png``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import Progress
from scipy import ndimage

from psicbatch.cpus import available_cpus

TEXTURES = ("grain", "brushed", "woven")
DEFECTS = ("ellipse", "scratch", "spots")
PIXELS_PER_PROCESS = 8 * 1408 * 512  # generate_many: about a second of work per process


def texture(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    noise = rng.normal(size=(height, width))
    if kind == "grain":
        surface = ndimage.gaussian_filter(noise, sigma=rng.uniform(1.0, 3.0))
    elif kind == "brushed":
        sigma = (rng.uniform(0.5, 1.0), rng.uniform(6.0, 12.0))
        surface = ndimage.gaussian_filter(noise, sigma=sigma[:: rng.choice([-1, 1])])
    else:
        y, x = np.mgrid[:height, :width]
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 14)
        phase = (x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period
        surface = np.sin(phase) + 0.5 * ndimage.gaussian_filter(noise, 1.0)
    surface = (surface - surface.mean()) / (surface.std() + 1e-8)
    return rng.uniform(90, 160) + rng.uniform(12, 25) * surface


def defect_mask(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    scale = min(height, width)
    cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
    if kind == "ellipse":
        y, x = np.mgrid[:height, :width]
        a, b = rng.uniform(0.05, 0.18) * scale, rng.uniform(0.02, 0.08) * scale
        angle = rng.uniform(0, np.pi)
        u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
        v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    if kind == "scratch":
        mask = np.zeros((height, width), bool)
        angle = rng.uniform(0, 2 * np.pi)
        thickness = rng.uniform(1.0, 2.5)
        for _ in range(int(rng.uniform(0.2, 0.5) * scale)):
            add_disc(mask, cy, cx, thickness)
            angle += rng.normal(0, 0.15)
            cy = np.clip(cy + np.sin(angle), 0, height - 1)
            cx = np.clip(cx + np.cos(angle), 0, width - 1)
        return mask
    mask = np.zeros((height, width), bool)
    for _ in range(rng.integers(3, 8)):
        sy, sx = cy + rng.normal(0, 0.05 * scale), cx + rng.normal(0, 0.05 * scale)
        add_disc(mask, sy, sx, rng.uniform(1.5, 0.03 * scale + 2))
    return mask


def add_disc(mask: np.ndarray, cy: float, cx: float, radius: float) -> None:
    """Set the pixels with (x - cx)^2 + (y - cy)^2 <= radius^2, computed only in the
    disc's bounding box (a scratch is hundreds of discs: over the whole image, a
    1408x512 one took a quarter of a second)."""
    top, left = max(0, math.floor(cy - radius)), max(0, math.floor(cx - radius))
    bottom = min(mask.shape[0], math.ceil(cy + radius) + 1)
    right = min(mask.shape[1], math.ceil(cx + radius) + 1)
    if top >= bottom or left >= right:
        return
    y, x = np.ogrid[top:bottom, left:right]
    mask[top:bottom, left:right] |= (x - cx) ** 2 + (y - cy) ** 2 <= radius**2


def synth_image(
    rng: np.random.Generator, height: int, width: int, defective: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 image and its boolean mask (all False when defect-free)."""
    surface = texture(rng, rng.choice(TEXTURES), height, width)
    mask = np.zeros((height, width), bool)
    if defective:
        mask = defect_mask(rng, rng.choice(DEFECTS), height, width)
        contrast = rng.uniform(35, 70) * rng.choice([-1, 1])
        surface = surface + contrast * mask
    return np.clip(surface, 0, 255).astype(np.uint8), mask


def generate(
    out: Path,
    count: int,
    size: tuple[int, int] = (128, 128),
    defect_rate: float = 0.3,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[Path]:
    """Write ``count`` images (a ``defect_rate`` share defective) and return image paths."""
    height, width = size
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    defective_count = round(count * defect_rate)
    flags = np.array([True] * defective_count + [False] * (count - defective_count))
    rng.shuffle(flags)
    paths = []
    task = progress.add_task("generating", total=count, status="") if progress else None
    for index, defective in enumerate(flags):
        image, mask = synth_image(rng, height, width, bool(defective))
        name = f"synth_{index:05d}.png"
        Image.fromarray(image).save(out / "images" / name)
        if defective:
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / name)
        paths.append(out / "images" / name)
        if progress is not None and task is not None:
            progress.advance(task)
    meta = {"count": count, "size": [height, width], "defect_rate": defect_rate, "seed": seed}
    (out / "synth.json").write_text(json.dumps(meta, indent=2))
    return paths


def generate_many(
    out: Path,
    count: int,
    size: tuple[int, int],
    defect_rate: float = 0.3,
    seed: int = 0,
    processes: int | None = None,
) -> list[Path]:
    """``generate`` in chunks on several processes (a 1408x512 image takes about 0.1 s of
    one core): chunk k is ``generate(out / str(k), ..., seed=seed + k)``, so the same
    seed and number of processes give the same images. By default, one process per CPU
    with at least ``PIXELS_PER_PROCESS`` to generate (starting one costs about a second).
    Returns every image path."""
    if processes is None:
        processes = min(available_cpus(), count * size[0] * size[1] // PIXELS_PER_PROCESS)
    chunks = max(1, min(count, processes))
    shares = [count // chunks + (k < count % chunks) for k in range(chunks)]
    jobs = [(out / str(k), share, size, defect_rate, seed + k) for k, share in enumerate(shares)]
    if chunks == 1:
        return generate(*jobs[0])
    context = multiprocessing.get_context("spawn")  # no state of the caller's inherited
    with ProcessPoolExecutor(chunks, mp_context=context) as pool:
        return [path for part in pool.map(_generate_job, jobs) for path in part]


def _generate_job(job: tuple[Path, int, tuple[int, int], float, int]) -> list[Path]:
    return generate(*job)
