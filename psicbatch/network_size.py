"""The input sizes PSIC-Net takes. Kept apart from ``model`` so that command options can
check sizes without importing torch."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from psicbatch.run.headers import image_size

if TYPE_CHECKING:
    from psicbatch.data.layouts import SampleRef

#: The network's total down-sampling; inputs are padded to a multiple of it.
STRIDE = 8
#: The smallest input side trained or built (the classifier pools 3 more times).
MIN_NETWORK_SIZE = 32
#: ``--input-size auto`` keeps the fixed 512x512 default's pixels (so its cost per image)
#: while following the images' shape.
AUTO_PIXELS = 512 * 512


def fitted_size(height: int, width: int, pixels: int = AUTO_PIXELS) -> tuple[int, int]:
    """An image's size as the network takes it: scaled down (never up) to at most about
    ``pixels``, the aspect ratio kept, each side a multiple of STRIDE and at least
    MIN_NETWORK_SIZE. A fixed 512x512 squashes a 1260x500 KolektorSDD image (which did
    as well there: benchmarks/results/kolektorsdd-input-size/) and stretches a 630x230
    KolektorSDD2 one, computing 1.8x the pixels it has."""
    scale = min(1.0, (pixels / (height * width)) ** 0.5)

    def side(length: int) -> int:
        return max(MIN_NETWORK_SIZE, round(length * scale / STRIDE) * STRIDE)

    return side(height), side(width)


SIZE_SAMPLE = 64  # images whose headers ``auto`` reads: evenly spaced through the dataset


def auto_input_size(samples: list[SampleRef], bit_depth: int = 8) -> tuple[tuple[int, int], str]:
    """``--input-size auto``: the median height and width of (up to SIZE_SAMPLE of) the
    images, as the network takes them (``fitted_size``), and a line saying so."""
    step = -(-len(samples) // SIZE_SAMPLE)  # at most SIZE_SAMPLE of them
    sizes = [image_size(sample.image_path, bit_depth) for sample in samples[::step]]
    height = round(statistics.median(h for h, _ in sizes))
    width = round(statistics.median(w for _, w in sizes))
    size = fitted_size(height, width)
    how = "as it is" if size == (height, width) else "scaled to at most 512x512's pixels"
    return size, (
        f"{size[0]}x{size[1]} (auto: the images' median size {height}x{width}, {how}, "
        "aspect ratio kept)"
    )
