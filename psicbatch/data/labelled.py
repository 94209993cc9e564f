"""A labelled dataset as a stream of images ready for an engine, with their true masks.

Evaluation reads each image once, in background threads beside inference, a few batches
ahead: a test set of any size is scored in bounded memory (holding a DAGM test set at
the input size would take gigabytes), and decoding overlaps the engine's work.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from psicbatch.cpus import available_cpus
from psicbatch.data.images import read_image
from psicbatch.data.layouts import SampleRef
from psicbatch.data.memory import TensorDataset, known_defect_mask
from psicbatch.preprocess import Preprocessing, engine_input
from psicbatch.run.stages import staged
from psicbatch.tiles import TileGrid


@dataclass
class LabelledImage:
    sample: SampleRef
    pixels: np.ndarray  # C x H x W at the engine's size, or a tiled model's T x C x h x w tiles
    placement: tuple[int, int] | TileGrid  # the original (H, W), or the tiles' grid
    truth: np.ndarray | None  # bool H x W defect mask at the original size; None: not known

    @property
    def size(self) -> tuple[int, int]:
        """The image's original (height, width), where its masks are scored."""
        if isinstance(self.placement, TileGrid):
            return self.placement.size
        return self.placement


def read_labelled(
    samples: list[SampleRef], preprocessing: Preprocessing, batch_size: int
) -> Iterator[LabelledImage]:
    """Each sample decoded as ``psicbatch run`` decodes it, in order, by one thread per
    available CPU at most two batches ahead of the consumer (a tiled model's images: by
    two threads, one ahead)."""

    def read(sample: SampleRef) -> LabelledImage:
        image = read_image(
            sample.image_path, preprocessing.channels, bit_depth=preprocessing.bit_depth
        )
        pixels, placement = engine_input(image, preprocessing)
        return LabelledImage(sample, pixels, placement, known_defect_mask(sample, image.shape[:2]))

    if preprocessing.tile_overlap is None:
        depth, workers = 2 * batch_size, available_cpus()
    else:  # a line-scan image's tiles and mask can take hundreds of megabytes each
        depth, workers = 1, min(2, available_cpus())
    return staged(samples, read, depth=depth, name="eval-read", workers=workers)


def from_memory(samples: list[SampleRef], data: TensorDataset) -> Iterator[LabelledImage]:
    """Images already decoded at the engine's size (cross-validation holds its dataset for
    training), with their true masks read as they are scored."""
    for index, sample in enumerate(samples):
        size = data.original_sizes[index]
        yield LabelledImage(
            sample, data.images[index].numpy(), size, known_defect_mask(sample, size)
        )
