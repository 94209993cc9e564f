"""Large and line-scan images in tiles at native resolution, stitched back without seams.

A model trained with ``train --tile HxW`` takes tiles of its input size: an image is cut
into a grid of overlapping tiles (at least ``overlap`` pixels shared by neighbours, the
grid spread evenly so the last tile ends at the image's edge), the engine runs on the
tiles of several images at once, and the segmentation is stitched back at the original
size. Overlaps are blended: each tile's pixels are weighted by a ramp that falls towards
its edges (over ``overlap`` pixels), and the weighted sum is divided by the sum of the
weights. The weights are products of one ramp per axis, so that sum is the product of
two 1-D sums and no full-size weight map is kept: stitching holds one float32 map of
the image (4 bytes per pixel) besides one batch of tiles. The image probability is the
highest tile probability, and that tile is recorded. An image smaller than a tile is
padded (edge pixels repeated) to the tile and its map cropped back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import torch


def axis_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: evenly spread, neighbours sharing at least ``overlap``
    pixels, the first at 0 and the last ending at ``length`` (``[0]`` when one tile
    covers it)."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def axis_ramp(tile: int, overlap: int) -> np.ndarray:
    """One tile's weights along an axis: 1 inside, falling linearly over ``overlap``
    pixels towards both edges, never 0 (an edge pixel at the image's border is covered
    by that tile alone)."""
    ramp = max(1, overlap)
    position = np.arange(tile)
    return (np.minimum(np.minimum(position + 1, tile - position), ramp) / ramp).astype(np.float32)


@dataclass(frozen=True)
class TileGrid:
    """How one image is cut: its size, the tile size and the tile origins (raster order)."""

    size: tuple[int, int]  # the image's (H, W)
    tile: tuple[int, int]  # the engine's input (H, W)
    overlap: int

    @property
    def padded(self) -> tuple[int, int]:
        """The size tiled: the image's, grown to at least one tile."""
        return max(self.size[0], self.tile[0]), max(self.size[1], self.tile[1])

    @cached_property
    def ys(self) -> list[int]:
        return axis_origins(self.padded[0], self.tile[0], self.overlap)

    @cached_property
    def xs(self) -> list[int]:
        return axis_origins(self.padded[1], self.tile[1], self.overlap)

    @property
    def origins(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.ys for x in self.xs]

    def cut(self, image: np.ndarray) -> np.ndarray:
        """H x W x C pixels -> T x C x h x w tiles (a copy), padding small images."""
        height, width = self.padded
        grow = ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0))
        padded = np.pad(image, grow, mode="edge") if any(g[1] for g in grow[:2]) else image
        th, tw = self.tile
        tiles = np.empty((len(self.origins), image.shape[2], th, tw), dtype=image.dtype)
        for index, (y, x) in enumerate(self.origins):  # one copy of each tile, no more
            tiles[index] = padded[y : y + th, x : x + tw].transpose(2, 0, 1)
        return tiles

    def stitch(self, segmentation: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """T x h x w tile probabilities (this grid's, in order) -> H x W, blended (into
        ``out`` when given). One multiply-add per tile: on a GPU every operation is a
        kernel launch, and an image of a line-scan camera has hundreds of tiles."""
        th, tw = self.tile
        device = segmentation.device
        weights, sum_y, sum_x = _blending(self, device)
        if out is not None and self.padded == self.size:
            total = out.zero_()  # stitched in place
        else:
            total = torch.zeros(self.padded, device=device)
        for (y, x), probabilities in zip(self.origins, segmentation, strict=True):
            total[y : y + th, x : x + tw].addcmul_(probabilities, weights)
        total /= sum_y[:, None]  # two 1-D divisions: no full-size map of weight sums
        total /= sum_x[None, :]
        cropped = total[: self.size[0], : self.size[1]]
        return cropped if out is None or total is out else out.copy_(cropped)

    def tile_box(self, index: int) -> dict[str, int]:
        """Tile ``index``'s box, clipped to the image."""
        y, x = self.origins[index]
        return {
            "x": x,
            "y": y,
            "w": min(self.tile[1], self.size[1] - x),
            "h": min(self.tile[0], self.size[0] - y),
        }

    def deciding_tile(self, probabilities: torch.Tensor) -> tuple[float, dict[str, int]]:
        """The image probability (the highest tile probability) and that tile's box."""
        best = int(torch.argmax(probabilities))
        return float(probabilities[best]), self.tile_box(best)


@lru_cache(maxsize=16)
def _blending(grid: TileGrid, device: torch.device) -> tuple[torch.Tensor, ...]:
    """A tile's weights and their sums along each axis of ``grid``, on ``device``: made
    once per grid and device (a line-scan camera's images are all one size), so stitching
    uploads nothing."""
    th, tw = grid.tile
    ramp_y = torch.from_numpy(axis_ramp(th, grid.overlap)).to(device)
    ramp_x = torch.from_numpy(axis_ramp(tw, grid.overlap)).to(device)
    sum_y = torch.zeros(grid.padded[0], device=device)
    sum_x = torch.zeros(grid.padded[1], device=device)
    for y in grid.ys:
        sum_y[y : y + th] += ramp_y
    for x in grid.xs:
        sum_x[x : x + tw] += ramp_x
    return ramp_y[:, None] * ramp_x[None, :], sum_y, sum_x
