"""Pictures for self-contained HTML pages: PNG data URIs (a page can be mailed or
archived alone) and thumbnails with defect masks tinted over them."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from psicbatch.data.images import ImageReadError, ReadStalled
from psicbatch.run.limited import TimeLimitExceeded

RED = (255, 0, 0)
BLUE = (0, 90, 255)  # a second mask beside a red one (another run's)
TINT = 0.55  # how much of a tinted pixel is the mask's colour


class PictureReader:
    """Reads a page's images one after another. A picture that cannot be read is left
    out; once one stalled past its time limit, so are all after it: they sit on the same
    share, and each would wait its whole limit (a page shows dozens)."""

    def __init__(self) -> None:
        self.stalled = False

    def read(self, read: Callable[[], np.ndarray]) -> np.ndarray | None:
        """``read()``'s image; None when it fails or stalls, or one before it stalled."""
        if self.stalled:
            return None
        try:
            return read()
        except (ReadStalled, TimeLimitExceeded):
            self.stalled = True
        except (ImageReadError, OSError, ValueError):  # ValueError: PIL on damaged metadata
            pass
        return None


def png_bytes_uri(data: bytes) -> str:
    """PNG file contents as a data URI."""
    return "data:image/png;base64," + base64.b64encode(data).decode()


def png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return png_bytes_uri(buffer.getvalue())


def figure_data_uri(figure: Any) -> str:
    """A matplotlib figure as a PNG data URI; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return png_bytes_uri(buffer.getvalue())


def thumbnail_size(size: tuple[int, int], height: int) -> tuple[int, int]:
    """(height, width) of a thumbnail ``height`` pixels tall of an image of ``size``."""
    return height, max(1, round(size[1] * height / size[0]))


def shrink_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool mask at ``size`` (H, W) where any defect pixel marks its thumbnail pixel, so
    a crack a few pixels wide stays visible in a small picture."""
    if mask.shape == tuple(size):
        return mask.astype(bool)
    picture = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(picture.resize((size[1], size[0]), Image.Resampling.BOX)) > 0


def tinted_thumbnail(
    image: np.ndarray,
    height: int,
    layers: Sequence[tuple[np.ndarray, tuple[int, int, int]]] = (),
) -> Image.Image:
    """The H x W x 3 uint8 ``image`` scaled to ``height`` pixels, each layer's mask (any
    size; shrunk as ``shrink_mask``) tinted in its colour."""
    size = thumbnail_size(image.shape[:2], height)
    picture = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(picture, dtype=np.float32).copy()
    for mask, colour in layers:
        inside = shrink_mask(mask, size)
        pixels[inside] = (1 - TINT) * pixels[inside] + TINT * np.array(colour, np.float32)
    return Image.fromarray(pixels.astype(np.uint8))
