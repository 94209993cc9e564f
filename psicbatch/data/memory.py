"""Decoding a (small) training set once into uint8 tensors held in memory.

Surface-defect training sets are small (hundreds to a few thousand images), so decoding
each image once and keeping its pixels (uint8, or uint16 for 12/16-bit models) at the
network's input size is the fastest way to feed many training epochs on a CPU.
Cross-validation scores its test folds from the same tensors; ``eval`` reads its images
as it scores them instead (``labelled``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import Progress

from psicbatch.cpus import available_cpus
from psicbatch.data.images import ImageReadError, mask_size_error, read_image, read_mask
from psicbatch.data.layouts import SampleRef
from psicbatch.data.masks import DefectMasks
from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path
from psicbatch.preprocess import read_resized, resize_mask
from psicbatch.run.headers import image_size
from psicbatch.run.stages import staged
from psicbatch.tiles import TileGrid

STATS_CHUNK = 16  # images whose pixels are summed at once


@dataclass
class TensorDataset:
    images: torch.Tensor  # uint8 (uint16 above 8 bits), N x C x H x W
    masks: DefectMasks  # N x 1 x H x W, only those with a defect pixel held
    labels: torch.Tensor  # bool, N
    original_sizes: list[tuple[int, int]]  # (height, width) of each file before resizing
    bit_depth: int = 8  # the pixels' scale: 2^bit_depth - 1 is white
    # bool N, False for a defective image whose defect pixels are not known (a review's
    # sorting without a mask): it teaches the image decision, not the masks. None: all known.
    mask_known: torch.Tensor | None = None

    def masks_known(self) -> torch.Tensor:
        """Which images' masks are known (bool N)."""
        if self.mask_known is None:
            return torch.ones(len(self.labels), dtype=torch.bool)
        return self.mask_known

    def subset(self, indices: list[int], images: torch.Tensor | None = None) -> TensorDataset:
        """The samples ``indices``, with their pixels copied, or ``images`` where the
        caller holds them already (a view: ``InPlaceSplits``)."""
        index = torch.tensor(indices, dtype=torch.long)
        return TensorDataset(
            self.images[index] if images is None else images,
            self.masks.subset(indices),
            self.labels[index],
            [self.original_sizes[i] for i in indices],
            self.bit_depth,
            None if self.mask_known is None else self.mask_known[index],
        )

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std (unbiased) of the pixels on [0, 1], for the checkpoint's
        normalisation: summed a few images at a time in float64, since a float copy of the
        whole set would take 4 bytes per pixel of every image at once."""
        white = 2**self.bit_depth - 1
        channels = self.images.shape[1]
        total = torch.zeros(channels, dtype=torch.float64)
        squares = torch.zeros(channels, dtype=torch.float64)
        for chunk in self.images.split(STATS_CHUNK):
            pixels = chunk.double().clamp_(max=white).div_(white)
            total += pixels.sum(dim=(0, 2, 3))
            squares += pixels.square().sum(dim=(0, 2, 3))
        count = self.images.numel() // channels
        mean = total / count
        variance = (squares - count * mean.square()) / max(count - 1, 1)
        std = variance.clamp_min(0).sqrt().clamp_min(1e-3)
        return tuple(mean.tolist()), tuple(std.tolist())


class InPlaceSplits:
    """Splits of one in-memory dataset into two parts that share its pixels instead of
    copying them: for each split the images are rearranged in place, a row at a time, so
    that the first part's rows come first, each part in the order given; both parts are
    then views. Cross-validation holds its images once, not once more per fold.

    The dataset given is the splits' own from then on: its rows no longer follow its
    samples, and a part is valid until the next split."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data
        self.rows = list(range(len(data.images)))  # the sample each row holds now

    def split(self, first: list[int], second: list[int]) -> tuple[TensorDataset, TensorDataset]:
        """The samples ``first`` and ``second`` (indices of the dataset's samples, each
        sample in exactly one of them) as two datasets."""
        target = [*first, *second]
        if sorted(target) != list(range(len(self.rows))):
            raise ValueError("the two parts must hold every sample exactly once")
        row_of = {sample: row for row, sample in enumerate(self.rows)}
        rearrange_rows(self.data.images, [row_of[sample] for sample in target])
        self.rows = target
        cut = len(first)
        return (
            self.data.subset(first, self.data.images[:cut]),
            self.data.subset(second, self.data.images[cut:]),
        )


def rearrange_rows(tensor: torch.Tensor, sources: list[int]) -> None:
    """Row ``r`` of ``tensor`` becomes what row ``sources[r]`` was, in place: each cycle of
    the permutation is followed with one row held aside."""
    done = [False] * len(sources)
    for start in range(len(sources)):
        if done[start]:
            continue
        held = tensor[start].clone()
        row = start
        while True:
            done[row] = True
            source = sources[row]
            if source == start:
                tensor[row] = held
                break
            tensor[row] = tensor[source]
            row = source


def load_tiles(
    samples: list[SampleRef],
    tile: tuple[int, int],
    overlap: int,
    channels: int,
    progress: Progress | None = None,
    bit_depth: int = 8,
) -> TensorDataset:
    """Every image cut at native resolution into the grid of tiles a tiled run uses
    (``tiles.TileGrid``), each tile a sample labelled defective when its mask part holds
    a defect pixel; the trainer's balanced order then oversamples the defect tiles.

    The files' headers give every grid first (as a run reads them: sizes after EXIF
    rotation, oversized images refused), so the tiles are cut into one tensor of their
    final size: joining per-image parts would hold them twice, and the allocator keeps
    the parts' memory after they are freed. Headers are read by a thread per available
    CPU, images by two."""
    task = progress.add_task("reading headers", total=len(samples), status="") if progress else None
    workers = available_cpus()
    grids = []
    for size in staged(
        samples,
        lambda sample: image_size(sample.image_path, bit_depth),
        depth=2 * workers,
        name="headers",
        workers=workers,
    ):
        grids.append(TileGrid(size, tile, overlap))
        if progress is not None and task is not None:
            progress.advance(task)
    count = sum(len(grid.origins) for grid in grids)
    images = torch.empty((count, channels, *tile), dtype=_pixel_type(bit_depth))
    masks = DefectMasks(count, tile)
    task = progress.add_task("cutting tiles", total=len(samples), status="") if progress else None

    def read(job: tuple[SampleRef, TileGrid]) -> tuple[np.ndarray, np.ndarray]:
        sample, grid = job
        image = read_image(sample.image_path, channels, bit_depth=bit_depth)
        if image.shape[:2] != grid.size:
            raise ImageReadError(
                sample.image_path,
                f"decodes to {image.shape[1]}x{image.shape[0]} (width x height), but its "
                f"header says {grid.size[1]}x{grid.size[0]}",
            )
        return image, defect_mask(sample, grid.size)

    # A line-scan image and its mask can take hundreds of megabytes: two read at a time,
    # one ahead, as evaluation reads them.
    jobs = list(zip(samples, grids, strict=True))
    read_ahead = staged(jobs, read, depth=1, name="tiles", workers=min(2, workers))
    pixels = images.numpy()  # copied into by numpy: torch's copy would wake its threads
    start = 0
    for (image, mask), grid in zip(read_ahead, grids, strict=True):
        end = start + len(grid.origins)
        pixels[start:end] = grid.cut(image)
        for index, mask_tile in enumerate(grid.cut(mask[:, :, None])[:, 0], start=start):
            masks.put(index, mask_tile)
        start = end
        if progress is not None and task is not None:
            progress.advance(task)
    labels = torch.zeros(count, dtype=torch.bool)
    labels[masks.defective] = True  # the tiles whose part of the mask holds a defect pixel
    return TensorDataset(images, masks, labels, [tile] * count, bit_depth)


def _pixel_type(bit_depth: int) -> torch.dtype:
    return torch.uint8 if bit_depth == 8 else torch.uint16


def defect_mask(sample: SampleRef, size: tuple[int, int]) -> np.ndarray:
    """The sample's defect mask at its image's size (all False for a defect-free one)."""
    if not sample.mask_known:  # never an empty mask in its place: that would say "no defect"
        raise PsicbatchError(f"{readable_path(sample.image_path)}: defective without a mask")
    if sample.mask_path is None or not sample.is_defective:
        return np.zeros(size, bool)
    mask = read_mask(sample.mask_path)
    if mask.shape != tuple(size):
        raise mask_size_error(sample.mask_path, sample.image_path, mask.shape, size)
    return mask


def known_defect_mask(sample: SampleRef, size: tuple[int, int]) -> np.ndarray | None:
    """``defect_mask``, or None where the defect's pixels are not known: such an image is
    scored as an image, not as a mask."""
    return defect_mask(sample, size) if sample.mask_known else None


def load_into_memory(
    samples: list[SampleRef],
    size: tuple[int, int],
    channels: int,
    progress: Progress | None = None,
    bit_depth: int = 8,
) -> TensorDataset:
    """Every sample decoded and resized to ``size``, with its mask, by a thread per
    available CPU (decoding releases the GIL), in order, a few images ahead of the copy
    into the dataset's tensors."""
    images = torch.empty((len(samples), channels, *size), dtype=_pixel_type(bit_depth))
    masks = DefectMasks(len(samples), size)
    task = progress.add_task("loading images", total=len(samples), status="") if progress else None
    original_sizes = []

    def read(sample: SampleRef) -> tuple[np.ndarray, tuple[int, int], np.ndarray | None]:
        image, original_size = read_resized(sample.image_path, size, channels, bit_depth)
        if sample.mask_path is None or not sample.is_defective:
            return image, original_size, None
        return image, original_size, resize_mask(defect_mask(sample, original_size), size)

    workers = available_cpus()
    loaded = staged(samples, read, depth=2 * workers, name="load", workers=workers)
    pixels = images.numpy()  # copied into by numpy: torch's copy would wake its threads
    for index, (image, original_size, mask) in enumerate(loaded):
        original_sizes.append(original_size)
        pixels[index] = image.transpose(2, 0, 1)
        if mask is not None:
            masks.put(index, mask)
        if progress is not None and task is not None:
            progress.advance(task)
    labels = torch.tensor([s.is_defective for s in samples], dtype=torch.bool)
    known = torch.tensor([s.mask_known for s in samples], dtype=torch.bool)
    return TensorDataset(images, masks, labels, original_sizes, bit_depth, known)
