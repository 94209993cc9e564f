"""Reading images and masks from disk into numpy arrays, the one way every reader uses."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Formats (as PIL names them) that both decoders, PIL and DALI, read; any other (GIF, for
# one) is refused by both, so the decoder never decides whether an image gets a result.
DECODED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF", "WEBP")
UNREADABLE = "not a readable image (unknown or damaged format)"


class ImageReadError(PsicbatchError):
    """An image or mask file that cannot be decoded."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{readable_path(path)}: {problem}")
        self.path = path
        self.problem = problem


def image_files(folder: Path) -> list[Path]:
    """Images under ``folder`` (recursive), label files of the supported layouts (masks/,
    Label/, *_label, *_GT) left out, so a dataset folder can be given as it is."""
    files = sorted(p for p in folder.rglob("*") if _is_image_not_label(p, folder))
    if not files:
        raise PsicbatchError(f"{folder}: no images found")
    return files


def _is_image_not_label(path: Path, root: Path) -> bool:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    folders = {part.lower() for part in path.relative_to(root).parts[:-1]}
    return not folders & {"masks", "label"} and not path.stem.endswith(("_label", "_GT"))


def read_image(path: Path, channels: int, data: bytes | None = None) -> np.ndarray:
    """Decode to uint8 H x W x ``channels`` (1: grayscale, 3: RGB), EXIF rotation applied;
    from ``data`` when the file's bytes were already read (errors still name ``path``)."""
    with _open(path, data) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit grayscale to 8 bits rounded (v / 257), as DALI converts it, instead
            # of PIL's clipping conversion.
            wide = np.asarray(image, dtype=np.uint32).clip(0, 65535)
            image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
        return with_channels(image, channels)


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


def _open(path: Path, data: bytes | None = None) -> Image.Image:
    try:
        image = Image.open(path if data is None else io.BytesIO(data))
        image.load()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, UNREADABLE) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(path, f"damaged image ({error})") from None
    return image
