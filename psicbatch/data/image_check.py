"""Every image of a labelled dataset opened as far as its header before any is decoded.

Training decodes every image before it starts, and stopped at the first it could not use,
minutes in, and at the next after that file was mended. Headers alone take seconds:
``train``, ``cv``, ``eval`` and ``calibrate`` refuse such a dataset before decoding it,
naming the first file and counting the others, and ``psicbatch info DATA`` lists them
all. (Damage that only decoding finds, a file cut short, still stops the loading, naming
the file.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from psicbatch.data.images import (
    ImageReadError,
    ReadStalled,
    check_bit_depth,
    file_header,
    mask_size_error,
)
from psicbatch.data.layouts import SampleRef
from psicbatch.errors import PsicbatchError
from psicbatch.wording import counted


def unusable_images(
    samples: Sequence[SampleRef], bit_depth: int = 8
) -> tuple[list[ImageReadError], list[int | None]]:
    """What is wrong with each image a model of ``bit_depth`` could not use, or with its
    mask, as far as headers tell, in the samples' order; and each image's bit depth
    (None: its header could not be read)."""
    problems: list[ImageReadError] = []
    depths: list[int | None] = []
    for sample in samples:
        depth = None
        try:
            size, depth = file_header(sample.image_path)
            check_bit_depth(depth, bit_depth, sample.image_path)
            if sample.is_defective and sample.mask_path is not None:
                _check_mask_size(sample.mask_path, sample.image_path, size)
        except ReadStalled:
            raise  # the files beside it would stall as long: one line now
        except ImageReadError as error:
            problems.append(error)
        depths.append(depth)
    return problems, depths


def _check_mask_size(mask: Path, image: Path, size: tuple[int, int]) -> None:
    """A mask of neither the image's stored size nor that turned by a quarter (EXIF
    rotation, which only decoding some PNGs tells) cannot cover it; loading checks the
    rotated size exactly."""
    mask_size, _ = file_header(mask)
    if mask_size not in (size, size[::-1]):
        raise mask_size_error(mask, image, mask_size, size)


def refuse_unusable(samples: Sequence[SampleRef], data: str, bit_depth: int = 8) -> None:
    """One line for a dataset with images training would stop at: the first, and how
    many more (``psicbatch info DATA`` lists them)."""
    problems, _ = unusable_images(samples, bit_depth)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise PsicbatchError(
            f"{problems[0]} (and {counted(len(problems) - 1, 'more image')} that cannot be "
            f"used; psicbatch info {data} lists them)"
        )
