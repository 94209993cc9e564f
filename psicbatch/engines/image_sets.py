"""The images an engine build calibrates on and the separate images it checks parity on.

Parity measured on the calibration images themselves would flatter int8: the ranges were
fitted to exactly those pixels. So the two sets never share a file: ``--parity-images``
names its own folder, or every fourth image of ``--calib`` is held out of calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psicbatch.checkpoint import Checkpoint
from psicbatch.data.images import image_files
from psicbatch.engines.build_options import PARITY_COUNT, SYNTHETIC
from psicbatch.engines.parity import synthetic_parity_images
from psicbatch.errors import PsicbatchError
from psicbatch.preprocess import load_images

# A trained KolektorSDD fold model flipped a decision with 53 calibration images and kept
# parity with 132 (benchmarks/results/cpu-int8/): ranges need the rarer images too.
CALIBRATION_COUNT = 256
HOLD_OUT_EVERY = 4


@dataclass
class ImageSets:
    calibration: np.ndarray | None  # None: no calibration images were given
    parity: np.ndarray
    parity_source: str  # where the parity images came from, for the manifest and the user

    @property
    def calibration_count(self) -> int:
        return 0 if self.calibration is None else len(self.calibration)


def image_sets(
    checkpoint: Checkpoint,
    size: tuple[int, int],
    calib: Path | None,
    parity_images: Path | None,
    parity_count: int = PARITY_COUNT,
) -> ImageSets:
    """Calibration and parity images, preprocessed as the checkpoint says at ``size``."""
    calibration_files = _files(calib, "--calib") if calib else []
    parity_files = _files(parity_images, "--parity-images") if parity_images else []
    if calibration_files and not parity_files:
        if len(calibration_files) < 2:
            raise PsicbatchError(
                f"--calib {calib}: one image cannot be split into calibration and parity "
                "images; add images or pass --parity-images DIR"
            )
        parity_files = calibration_files[::HOLD_OUT_EVERY]
        calibration_files = [p for i, p in enumerate(calibration_files) if i % HOLD_OUT_EVERY]
        parity_source = f"held out of --calib {calib} (every {HOLD_OUT_EVERY}th image)"
    else:
        parity_source = f"--parity-images {parity_images}"
    shared = {p.resolve() for p in calibration_files} & {p.resolve() for p in parity_files}
    if shared:
        raise PsicbatchError(
            f"--parity-images {parity_images} and --calib {calib} share {len(shared)} "
            f"image(s), e.g. {min(shared)}; parity must be measured on images the "
            "calibration did not see"
        )
    preprocessing = checkpoint.preprocessing.at_size(size)
    calibration = (
        load_images(_spread(calibration_files, CALIBRATION_COUNT), preprocessing).numpy()
        if calibration_files
        else None
    )
    if not parity_files:
        return ImageSets(calibration, synthetic_parity_images(checkpoint, size), SYNTHETIC)
    parity = load_images(_spread(parity_files, parity_count), preprocessing).numpy()
    return ImageSets(calibration, parity, parity_source)


def _files(folder: Path, option: str) -> list[Path]:
    if not folder.is_dir():
        raise PsicbatchError(f"{option} {folder}: folder not found")
    return image_files(folder)


def _spread(paths: list[Path], count: int) -> list[Path]:
    """At most ``count`` paths, spread evenly over the sorted list (not just its start)."""
    step = max(1, -(-len(paths) // count))
    return paths[::step][:count]
