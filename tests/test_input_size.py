"""``--input-size auto``: the network's input follows the training images' shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from psicbatch.data.layouts import SampleRef
from psicbatch.network_size import (
    AUTO_PIXELS,
    MIN_NETWORK_SIZE,
    STRIDE,
    auto_input_size,
    fitted_size,
)
from psicbatch.run.headers import EXIF_ORIENTATION, image_size


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ((1260, 500), (816, 320)),  # KolektorSDD: scaled down, not squashed to a square
        ((630, 230), (632, 232)),  # KolektorSDD2: kept, not stretched to 512x512
        ((512, 512), (512, 512)),  # DAGM 2007
        ((2048, 2448), (472, 560)),  # a 5-megapixel camera frame
        ((20, 4000), (MIN_NETWORK_SIZE, 4000)),  # a line-scan strip: never below the minimum
    ],
)
def test_the_size_keeps_the_shape_within_the_pixel_budget(
    image: tuple[int, int], expected: tuple[int, int]
) -> None:
    size = fitted_size(*image)
    assert size == expected
    assert size[0] % STRIDE == 0 and size[1] % STRIDE == 0
    assert size[0] * size[1] <= 1.05 * max(AUTO_PIXELS, image[0] * image[1])  # never up
    if min(image) >= MIN_NETWORK_SIZE:
        assert size[0] / size[1] == pytest.approx(image[0] / image[1], rel=0.05)


def _samples(folder: Path, sizes: list[tuple[int, int]]) -> list[SampleRef]:
    samples = []
    for number, (height, width) in enumerate(sizes):
        path = folder / f"{number}.png"
        Image.fromarray(np.zeros((height, width), np.uint8)).save(path)
        samples.append(SampleRef(str(number), path, None, False, "g"))
    return samples


def test_auto_takes_the_median_height_and_width(tmp_path: Path) -> None:
    sizes = [(1250, 500), (1260, 500), (1270, 500), (1262, 500), (64, 64)]  # one odd one out
    size, said = auto_input_size(_samples(tmp_path, sizes))
    assert size == fitted_size(1260, 500) == (816, 320)
    assert said == (
        "816x320 (auto: the images' median size 1260x500, scaled to at most 512x512's "
        "pixels, aspect ratio kept)"
    )


def test_a_rotated_photo_counts_as_it_is_shown(tmp_path: Path) -> None:
    """EXIF orientation 6 (rotated 90 degrees): decoders output it 60 high and 20 wide."""
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(np.zeros((20, 60), np.uint8)).save(path, exif=exif)
    assert image_size(path) == (60, 20)
