"""How an image file becomes network input, and how network output returns to the image.

The one place for these rules: ``Preprocessing`` says them (size, interpolation, colour,
normalisation; saved in every checkpoint and engine manifest), ``read_resized`` decodes
and resizes a file, ``load_tensor`` gives the normalised tensor. Training, evaluation,
the PIL decoder, calibration and parity images and the benchmark baseline all call these;
the DALI pipeline takes its settings from the same ``Preprocessing``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from psicbatch.data.images import BIT_DEPTHS, read_image
from psicbatch.tiles import TileGrid

# Bilinear resizing that averages over the covered pixels when shrinking (PIL's BILINEAR;
# DALI's linear interpolation with antialiasing): the only one trained and served so far.
INTERPOLATIONS = ("bilinear-antialias",)


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become network input: decode to grayscale (1 mean/std value: PIL's
    ITU-R 601-2 luma) or RGB (3 values), EXIF rotation applied, at ``bit_depth``
    (``data.images.at_bit_depth``: 8, or 12/16-bit grayscale at full range); resize to
    ``input_size`` with ``interpolation``; scale to [0, 1] (pixel / (2^bit_depth - 1));
    then ``(x - mean) / std`` per channel."""

    input_size: tuple[int, int] = (512, 512)  # height, width
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    interpolation: str = INTERPOLATIONS[0]
    bit_depth: int = 8
    # None: images are resized to input_size; a number: cut at native resolution into
    # input_size tiles sharing at least this many pixels (``tiles.TileGrid``).
    tile_overlap: int | None = None

    def __post_init__(self) -> None:
        height, width = self.input_size
        if height < 1 or width < 1:
            raise ValueError(f"input_size must be positive, got {self.input_size}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"mean/std must match in length and std be > 0: {self}")
        if len(self.mean) not in (1, 3):
            raise ValueError(f"1 (grayscale) or 3 (RGB) channels, got {len(self.mean)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}")
        if self.bit_depth not in BIT_DEPTHS or (self.bit_depth > 8 and self.channels != 1):
            raise ValueError(f"bit depth 8, or 12/16 for grayscale, got {self.bit_depth}")
        if self.tile_overlap is not None and not 0 <= 2 * self.tile_overlap < min(height, width):
            raise ValueError(f"tile overlap must be below half the tile, got {self.tile_overlap}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def max_value(self) -> int:
        """The pixel value that scales to 1."""
        return 2**self.bit_depth - 1

    def at_size(self, size: tuple[int, int]) -> Preprocessing:
        height, width = size
        return replace(self, input_size=(height, width))

    def to_dict(self) -> dict[str, object]:
        """Plain values, as stored in checkpoints and engine manifests."""
        return {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "bit_depth": self.bit_depth,
            "scale": f"pixel / {self.max_value}",  # for readers of the file; derived
            "tile_overlap": self.tile_overlap,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            input_size=tuple(data["input_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            interpolation=data.get("interpolation", INTERPOLATIONS[0]),  # older files
            bit_depth=data.get("bit_depth", 8),  # older files: 8-bit models
            tile_overlap=data.get("tile_overlap"),  # older files: resized, not tiled
        )


def read_resized(
    path: Path, size: tuple[int, int], channels: int, bit_depth: int = 8
) -> tuple[np.ndarray, tuple[int, int]]:
    """H x W x C pixels (uint8, or uint16 above 8 bits) at ``size`` and the original
    (H, W): decoding, colour and resizing as every path does them."""
    image = read_image(path, channels, bit_depth=bit_depth)
    return resize_image(image, size), image.shape[:2]


def read_chw(
    path: Path, preprocessing: Preprocessing, data: bytes | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """C x H x W pixels at the engine size and the original (H, W): what decoders hand
    on, one or two bytes per pixel, to be normalised where the engine runs
    (``Normalizer``; ``data``: the file's bytes, when already read)."""
    image = read_image(path, preprocessing.channels, data, preprocessing.bit_depth)
    return chw_at_size(image, preprocessing), image.shape[:2]


def engine_input(
    image: np.ndarray, preprocessing: Preprocessing
) -> tuple[np.ndarray, tuple[int, int] | TileGrid]:
    """H x W x C pixels -> what decoders hand on: C x H x W at the engine size and the
    original size, or, for a tiled model, the tiles (T x C x h x w) and their grid."""
    if preprocessing.tile_overlap is None:
        return chw_at_size(image, preprocessing), (image.shape[0], image.shape[1])
    grid = TileGrid(image.shape[:2], preprocessing.input_size, preprocessing.tile_overlap)
    return grid.cut(image), grid


def chw_at_size(image: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """H x W x C pixels (any size) -> C x H x W at the engine size, a writable copy."""
    resized = resize_image(image, preprocessing.input_size)
    return np.array(resized.transpose(2, 0, 1), order="C")


def load_tensor(
    path: Path, preprocessing: Preprocessing, data: bytes | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """The normalised float32 C x H x W network input of one file, and its original size."""
    chw, size = read_chw(path, preprocessing, data)
    return normalize(torch.from_numpy(chw)[None], preprocessing)[0], size


def load_images(paths: list[Path], preprocessing: Preprocessing) -> torch.Tensor:
    """Image files as one batch of network input: the calibration and parity images of
    engine builds."""
    return torch.stack([load_tensor(path, preprocessing)[0] for path in paths])


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of uint8 H x W x C, or uint16
    H x W x 1, to ``size`` (H, W); 16-bit pixels are resized in float32 and rounded."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    if image.dtype == np.uint16:
        wide = Image.fromarray(image[:, :, 0].astype(np.float32))
        resized = np.asarray(wide.resize((width, height), Image.BILINEAR))
        return np.rint(resized).clip(0, 65535).astype(np.uint16)[:, :, None]
    if image.shape[2] == 1:
        resized = Image.fromarray(image[:, :, 0]).resize((width, height), Image.BILINEAR)
        return np.asarray(resized)[:, :, None]
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink or grow a binary mask; a pixel is defect if any defect falls inside it, so
    thin scratches survive down-scaling."""
    height, width = size
    if mask.shape == (height, width):
        return mask
    coverage = Image.fromarray(mask.astype(np.float32)).resize((width, height), Image.BOX)
    return np.asarray(coverage) > 0


class Normalizer:
    """uint8 (uint16 above 8 bits) N x C x H x W -> float32 network input, on one device
    with the mean and std kept there: a run uploads one or two bytes per pixel and
    normalises on the engine's device, with the same arithmetic (so the same bits) as
    ``normalize``. A 12-bit model clips values above 4095 here."""

    def __init__(self, preprocessing: Preprocessing, device: torch.device | str) -> None:
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(shape).to(device)
        self.std = torch.tensor(preprocessing.std, dtype=torch.float32).view(shape).to(device)
        self.max_value = float(preprocessing.max_value)
        self.clip = preprocessing.bit_depth == 12

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.float()
        if self.clip:
            pixels = pixels.clamp_(max=self.max_value)
        return (pixels / self.max_value - self.mean) / self.std


def normalize(images: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Pixels N x C x H x W -> float32 network input, where the images are."""
    return Normalizer(preprocessing, images.device)(images)


def resize_probabilities(probabilities: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bring N x 1 x h x w probability maps back to an original image size (bilinear)."""
    if tuple(probabilities.shape[-2:]) == tuple(size):
        return probabilities
    return torch.nn.functional.interpolate(
        probabilities.float(), size=size, mode="bilinear", align_corners=False
    )


def full_resolution_mask(
    segmentation: np.ndarray, size: tuple[int, int], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel probabilities at the engine size -> (probabilities at ``size``, mask there)."""
    full = resize_probabilities(torch.from_numpy(segmentation)[None, None], size)[0, 0].numpy()
    return full, full >= threshold
