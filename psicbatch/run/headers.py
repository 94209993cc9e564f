"""What an image file's header says before anything decodes it: its size after EXIF
rotation, its format and bit depth, each checked (oversized images, formats not both
decoders read, 8-bit images for deeper models) so that a bad file is refused in one line
instead of making a decoder allocate gigabytes."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

from PIL import Image

from psicbatch.data.images import (
    DECODED_FORMATS,
    MAX_PIXELS,
    ImageReadError,
    check_bit_depth,
    check_one_image,
    check_pixels,
    image_bit_depth,
    images_held,
    read_image,
    within_read_limit,
)
from psicbatch.pixel_limit import VARIABLE
from psicbatch.run.files import FileStamp, read_file

EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap height and width
ANY_FILE_SIZE = 2**40  # training reads files of any size (a run has --max-file-size)


def read_bytes(
    path: Path, max_bytes: int, bit_depth: int = 8
) -> tuple[bytes, tuple[int, int] | None, FileStamp]:
    """The file's bytes, the (H, W) its header gives (None for formats PIL cannot
    identify) and its stamp, or an ImageReadError saying why they cannot be used (by a
    model of ``bit_depth``, too)."""
    data, stamp = read_file(path, max_bytes)
    return data, header_size(path, data, bit_depth), stamp


def header_size(path: Path, data: bytes, bit_depth: int) -> tuple[int, int] | None:
    """(H, W) after EXIF rotation, as decoders output it. Refuses images whose header
    claims more than MAX_PIXELS before anything decodes them (a 20000x20000 header would
    make a decoder allocate gigabytes), formats not both decoders read, and 8-bit images
    for deeper models. Formats PIL cannot identify give None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            kind, depth = image.format, image_bit_depth(image)
            held = images_held(path, image)
            # An oversized image is refused below, before its orientation is looked for:
            # for some PNGs that decodes them.
            oversized = width * height > MAX_PIXELS
            rotated = not oversized and _orientation(image, data) in TRANSPOSING_ORIENTATIONS
    except ImageReadError:
        raise
    except Image.DecompressionBombError:
        limit = f"above the {MAX_PIXELS / 1e6:.3g} megapixel limit; set {VARIABLE} to raise it"
        raise ImageReadError(path, f"image is far too large ({limit})") from None
    except Exception:  # unknown or damaged header: the decoder says what is wrong
        return None
    if kind not in DECODED_FORMATS:
        raise ImageReadError(
            path, f"unsupported image format ({kind}); psicbatch reads PNG, JPEG, BMP, TIFF, WebP"
        )
    check_bit_depth(depth, bit_depth, path)
    check_pixels(path, width, height)
    check_one_image(path, image, held)
    return (width, height) if rotated else (height, width)


def _orientation(image: Image.Image, data: bytes) -> int:
    """The EXIF orientation tag; 1 (as stored) when there is none or it cannot be read.
    PIL looks for a PNG's orientation after its pixels too, by decoding the whole image:
    a PNG without any chunk that can hold one (``_png_may_orient``) is not decoded here."""
    try:
        if image.format == "PNG" and "exif" not in image.info and not _png_may_orient(data):
            return 1
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # damaged metadata: the decoder will say what is wrong with the file
        return 1


# Text chunks PIL reads an orientation from (XMP, ImageMagick's raw EXIF), besides eXIf.
ORIENTING_KEYWORDS = (b"XML:com.adobe.xmp", b"Raw profile type exif")


def _png_may_orient(data: bytes) -> bool:
    """Whether a PNG has an eXIf chunk or a text chunk PIL reads an orientation from,
    anywhere in the file: found from the chunk headers alone (each: 4-byte length, 4-byte
    type, data, 4-byte CRC), without decoding."""
    offset = 8  # after the signature
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        if kind == b"eXIf":
            return True
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            keyword = data[offset + 8 : offset + 8 + min(length, 80)].split(b"\0", 1)[0]
            if keyword in ORIENTING_KEYWORDS:
                return True
        if kind == b"IEND":
            return False
        offset += 12 + length
    return False


def image_size(path: Path, bit_depth: int = 8) -> tuple[int, int]:
    """An image's (H, W) after EXIF rotation, from its header, for training (any file
    size is read, within the read limit; the orientation is found without decoding, as a
    run finds it). A header PIL cannot read is decoded, which says what is wrong with the
    file."""
    data, size, _ = within_read_limit(path, partial(read_bytes, path, ANY_FILE_SIZE, bit_depth))
    if size is None:
        height, width = read_image(path, 1, data, bit_depth).shape[:2]
        return height, width
    return size
