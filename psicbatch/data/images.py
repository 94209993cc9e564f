"""Reading images and masks from disk into numpy arrays, the one way every reader uses.

Every image's size is checked from its header against ``MAX_PIXELS`` (100 megapixels,
or ``PSICBATCH_MAX_MEGAPIXELS``: see ``pixel_limit``) before it is decoded
(``check_pixels``), and refused in one line above it. PIL's own decompression-bomb check
is set to the same limit for this process: no warning for the images psicbatch accepts,
and PIL's refusal at twice the limit stays as a backstop.

A file opened from its path (training, evaluation, calibration, masks) is opened, read
and decoded within ``READ_SECONDS`` (``read_limit``): on a network share that stopped
answering a read waits in the kernel for ever, and a job must end with a line naming the
file instead. (A run reads each file's bytes itself, under its own ``--decode-timeout``.)
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from psicbatch import read_limit
from psicbatch.errors import PsicbatchError
from psicbatch.folder_walk import files_below
from psicbatch.paths import not_regular, readable_path
from psicbatch.pixel_limit import VARIABLE, max_pixels
from psicbatch.run.limited import TimeLimitExceeded, call_limited

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Formats (as PIL names them) that both decoders, PIL and DALI, read; any other (GIF, for
# one) is refused by both, so the decoder never decides whether an image gets a result.
DECODED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF", "WEBP")
UNREADABLE = "not a readable image (unknown or damaged format)"
EMPTY = "empty file (0 bytes)"
PERMISSION_DENIED = "permission denied"
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I")  # PIL's modes of 16-bit grayscale files
BIT_DEPTHS = (8, 12, 16)  # a model's pixel depth: 8 bits, or 12/16 stored in 16-bit files
T = TypeVar("T")
MAX_PIXELS = max_pixels()
READ_SECONDS = read_limit.read_seconds()
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# A TIFF's damaged tags: the file then decodes or gets an error row, which says so once.
warnings.filterwarnings("ignore", message="Corrupt EXIF data", module="PIL.TiffImagePlugin")


class ImageReadError(PsicbatchError):
    """An image or mask file that cannot be decoded."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{readable_path(path)}: {problem}")
        self.path = path
        self.problem = problem


class ReadStalled(ImageReadError):
    """A file that did not open, read and decode within READ_SECONDS: most likely on a
    share that stopped answering, where the files beside it would stall as well, so a
    reader of many stops at the first instead of waiting that long for each."""


def image_files(folder: Path) -> list[Path]:
    """Images under ``folder`` (recursive, ``files_below``), label files of the supported
    layouts (masks/, Label/, *_label, *_GT) left out, so a dataset folder can be given as
    it is."""
    files = sorted(p for p in files_below(folder) if _is_image_not_label(p, folder))
    if not files:
        raise PsicbatchError(f"{folder}: no images found")
    return files


def _is_image_not_label(path: Path, root: Path) -> bool:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    folders = {part.lower() for part in path.relative_to(root).parts[:-1]}
    return not folders & {"masks", "label"} and not path.stem.endswith(("_label", "_GT"))


def read_image(
    path: Path, channels: int, data: bytes | None = None, bit_depth: int = 8
) -> np.ndarray:
    """Decode to H x W x ``channels`` (1: grayscale, 3: RGB) at a model's ``bit_depth``
    (``at_bit_depth``), EXIF rotation applied; from ``data`` when the file's bytes were
    already read (errors still name ``path``)."""
    with _open(path, data) as image:
        return at_bit_depth(ImageOps.exif_transpose(image), channels, bit_depth, path)


def at_bit_depth(image: Image.Image, channels: int, bit_depth: int, path: Path) -> np.ndarray:
    """An opened image as a model of ``bit_depth`` reads it. 8: uint8, a 16-bit image
    rounded to 8 bits (v / 257, as DALI converts it, instead of PIL's clipping). 12 or 16:
    uint16 grayscale at full range, values as stored (a 12-bit model clips above 4095 when
    it normalises); an 8-bit image is refused, since scaling it up would invent precision."""
    depth = image_bit_depth(image)
    check_bit_depth(depth, bit_depth, path)
    if depth == 8:
        return with_channels(image, channels)
    pixels = np.asarray(image, dtype=np.uint32).clip(0, 65535)
    if bit_depth > 8:
        return pixels.astype(np.uint16)[:, :, None]
    rounded = Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8))
    return with_channels(rounded, channels)


def image_bit_depth(image: Image.Image) -> int:
    """16 for 16-bit grayscale (PIL's I;16 modes, and 32-bit integer images, read as
    16-bit), 8 for every other mode (PIL opens only these, also from a header alone)."""
    return 16 if image.mode in WIDE_MODES else 8


def check_bit_depth(image_depth: int, bit_depth: int, path: Path) -> None:
    """Refuse an 8-bit image for a model of more bits (known from the header alone)."""
    if bit_depth > 8 and image_depth == 8:
        raise ImageReadError(
            path,
            f"an 8-bit image, but the model reads {bit_depth}-bit grayscale "
            "(give it the camera's 16-bit files, or use a model trained on 8-bit images)",
        )


def file_bit_depth(path: Path) -> int:
    """A file's bit depth from its header (16 or 8): ``train --bit-depth auto``."""
    return file_header(path)[1]


def file_header(path: Path) -> tuple[tuple[int, int], int]:
    """A file's (H, W) as stored (before any EXIF rotation) and bit depth, opened as far
    as its header without decoding it: an ImageReadError for a file no reader would use
    (not an image, empty, too large, several images in one)."""
    with _open(path, lazy=True) as image:
        width, height = image.size
        return (height, width), image_bit_depth(image)


def mask_size_error(
    mask: Path, image: Path, mask_size: tuple[int, int], image_size: tuple[int, int]
) -> ImageReadError:
    """A mask that does not cover its image pixel for pixel (sizes as H, W)."""
    return ImageReadError(
        mask,
        f"mask is {mask_size[1]}x{mask_size[0]} (width x height) but its image "
        f"{readable_path(image)} is {image_size[1]}x{image_size[0]}; masks must have their "
        "image's size",
    )


def with_channels(image: Image.Image, channels: int) -> np.ndarray:
    """uint8 H x W x ``channels``: grayscale (1) or RGB (3), as every reader converts."""
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    return array[:, :, None] if channels == 1 else array


def read_mask(path: Path) -> np.ndarray:
    """Binary H x W mask: defect where the stored value (or palette index) is above zero."""
    with _open(path) as image:
        # Palette images: the *indices* mark the defect, not the colours they map to.
        array = np.asarray(image) if image.mode == "P" else np.asarray(image.convert("L"))
    return array > 0


def _open(path: Path, data: bytes | None = None, lazy: bool = False) -> Image.Image:
    """Open (and, unless ``lazy``, decode) an image, only from a regular file; failures
    as one-line errors. From the path, within READ_SECONDS (``ReadStalled``)."""
    if data is not None:
        return _opened(path, data, lazy)
    return within_read_limit(path, lambda: _opened(path, None, lazy))


def within_read_limit(path: Path, read: Callable[[], T]) -> T:
    """``read()``, a reading of ``path``, within READ_SECONDS; ``ReadStalled`` past it."""
    try:
        return call_limited(read, READ_SECONDS)
    except TimeLimitExceeded:
        raise read_stalled(path) from None


def read_stalled(path: Path) -> ReadStalled:
    """The error of a reading of ``path`` that ran past READ_SECONDS."""
    return ReadStalled(path, read_limit.stalled(READ_SECONDS))


def read_refusal(path: Path, error: OSError) -> ImageReadError:
    """The one-line error of a file the system would not let be read (a link that loops, a
    share's I/O error), from the error of its ``stat``, ``open`` or read."""
    if isinstance(error, FileNotFoundError):
        return ImageReadError(path, "no such file")
    if isinstance(error, PermissionError):
        return ImageReadError(path, PERMISSION_DENIED)
    return ImageReadError(path, f"cannot be read ({error.strerror or error})")


def _opened(path: Path, data: bytes | None, lazy: bool) -> Image.Image:
    if data is None:
        try:
            status = os.stat(path)
        except OSError as error:
            raise read_refusal(path, error) from None
        problem = not_regular(status.st_mode) or (EMPTY if not status.st_size else None)
        if problem:
            raise ImageReadError(path, problem)
    try:
        image = Image.open(path if data is None else io.BytesIO(data))
        try:
            check_pixels(path, *image.size)
            check_one_image(path, image)
            if not lazy:
                image.load()
        except BaseException:
            image.close()  # its file, at once: a run refuses thousands
            raise
    except (FileNotFoundError, PermissionError) as error:
        raise read_refusal(path, error) from None
    except UnidentifiedImageError:
        raise ImageReadError(path, UNREADABLE) from None
    except Image.DecompressionBombError as error:  # "Image size (N pixels) exceeds limit ..."
        raise ImageReadError(path, f"image is far too large ({str(error).split(',')[0]})") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(path, f"damaged image ({error})") from None
    return image


# Formats whose files may hold further images that every decoder passes over, each word
# as a user knows them. An MPO (a JPEG with a preview or second view appended) is not one:
# its first image is the picture.
SEQUENCES = {"TIFF": "pages", "WEBP": "frames", "PNG": "frames"}
NEW_SUBFILE_TYPE = 254  # a TIFF page's kind (its tag number)
# Its bits for pages that are no image of their own: a reduced-resolution copy (1), a
# transparency mask of another page (4).
NOT_AN_IMAGE = 0b101


def images_held(path: Path, image: Image.Image) -> int:
    """How many full images an opened file holds, from its headers: a TIFF's pages less
    its reduced-resolution copies (thumbnails) and transparency masks, an animated WebP's
    or PNG's frames. A
    list of them that cannot be followed is a damaged file: what it holds is unknown."""
    kind = str(image.format)
    if kind not in SEQUENCES:
        return 1
    try:
        frames = image.n_frames  # type: ignore[attr-defined]
        if frames == 1 or kind != "TIFF":
            return frames
        full = 0
        for page in range(frames):
            image.seek(page)
            full += not image.tag_v2.get(NEW_SUBFILE_TYPE, 0) & NOT_AN_IMAGE  # type: ignore[attr-defined]
        image.seek(0)
    except Exception as error:  # PIL's TypeError, EOFError, struct.error... of a broken list
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise ImageReadError(
            path, f"damaged image (its list of {SEQUENCES[kind]} is broken: {detail})"
        ) from None
    return full


def check_one_image(path: Path, image: Image.Image, held: int | None = None) -> None:
    """Refuse a file of several images: decoders read only its first, so a defect on
    another page would go uninspected while the file got a result."""
    held = images_held(path, image) if held is None else held
    if held > 1:
        raise ImageReadError(
            path,
            f"holds {held} images ({image.format} {SEQUENCES[str(image.format)]}); psicbatch "
            "inspects one image per file and would see only the first: save each as its own file",
        )


def check_pixels(path: Path, width: int, height: int) -> None:
    """Refuse an image of more than MAX_PIXELS, known from its header: decoding it would
    allocate all of it at once."""
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            path,
            f"image is {width}x{height} ({width * height / 1e6:.3g} megapixels), above the "
            f"{MAX_PIXELS / 1e6:.3g} megapixel limit (set {VARIABLE} to raise it)",
        )
