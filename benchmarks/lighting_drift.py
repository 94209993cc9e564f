"""A KolektorSDD-layout folder as a camera would see it under other light: every image's
pixels multiplied by GAIN (rounded, clipped to 0-255) and written as PNG, so no second
JPEG compression adds its own change; each label is linked, unchanged.

    python benchmarks/lighting_drift.py FOLDER OUT_DIR GAIN   # e.g. 0.8: a fifth darker
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from psicbatch.data.layouts import read_dataset


def main(folder: Path, out: Path, gain: float) -> None:
    for sample in read_dataset(folder, "kolektorsdd"):
        target = out / sample.id
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(sample.image_path) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        Image.fromarray(np.clip(np.rint(pixels * gain), 0, 255).astype(np.uint8)).save(
            target.with_suffix(".png")
        )
        assert sample.mask_path is not None  # every KolektorSDD image has its label file
        label = target.with_name(target.name + "_label" + sample.mask_path.suffix)
        label.symlink_to(sample.mask_path.resolve())


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
