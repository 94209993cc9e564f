"""Scaled KolektorSDD sorted as a review would sort it (the classes layout), with masks
for every defective image (all/), every second one (half/) or every fourth (quarter/).

    python benchmarks/kolektorsdd_review.py SCALED_KOLEKTORSDD WORK_DIR

Files are linked, not copied; names are ``kosNN_PartK``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

REVIEWS = {"all": 1, "half": 2, "quarter": 4}  # a mask for every n-th defective image


def main(scaled: Path, work: Path) -> None:
    defective = []
    for image in sorted(scaled.glob("kos*/Part*.jpg")):
        label = image.with_name(f"{image.stem}_label.png")
        name = f"{image.parent.name}_{image.stem}"
        if np.asarray(Image.open(label)).any():
            defective.append((name, image, label))
        else:
            for review in REVIEWS:
                (work / review / "good").mkdir(parents=True, exist_ok=True)
                (work / review / "good" / f"{name}.jpg").symlink_to(image)
    for number, (name, image, label) in enumerate(defective):
        for review, every in REVIEWS.items():
            for folder in ("defective", "masks"):
                (work / review / folder).mkdir(parents=True, exist_ok=True)
            (work / review / "defective" / f"{name}.jpg").symlink_to(image)
            if number % every == 0:
                (work / review / "masks" / f"{name}.png").symlink_to(label)
    print(f"{len(defective)} defective images: masks for all, every second, every fourth")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
