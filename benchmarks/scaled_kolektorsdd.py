"""KolektorSDD scaled by a factor into another folder, in its own layout.

    python benchmarks/scaled_kolektorsdd.py SOURCE TARGET SCALE

Images are scaled with Lanczos filtering; a label pixel is defective where any part of it
was (box filter > 0), so thin cracks stay in the labels.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image


def main(source: Path, target: Path, scale: float) -> None:
    for path in sorted(source.glob("kos*/Part*")):
        image = Image.open(path)
        size = (round(image.width * scale), round(image.height * scale))
        destination = target / path.parent.name / path.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if "_label" in path.stem:
            box = image.convert("L").resize(size, Image.Resampling.BOX)
            box.point(lambda value: 255 if value > 0 else 0).save(destination)
        else:
            image.resize(size, Image.Resampling.LANCZOS).save(destination, quality=95)
    print(f"scaled {source} by {scale} into {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
