"""Engine outputs -> result rows, for a whole batch at once on the engine's device.

Per size group (images of one original size), as tensor ops: resize the probability maps
to that size, take each image's highest pixel probability, and only for images whose
maximum reaches the threshold (exactly those with defect pixels) threshold the map,
count the area, find the bounding box and the mask's run boundaries in the column-major
order of COCO RLE. Only those boundaries cross to the host (4 bytes each, a few per
defect column, instead of a byte per pixel); every other image gets the empty mask's
RLE without any per-pixel work; so does every image a ``gate`` leaves out (in a gated run,
the images whose probability already judges them defect-free: their rows get empty masks
anyway). Index tensors reach the device from pinned memory, so
the one wait per size group is for the list of images with defects. The rows are
byte-identical to resizing, thresholding and encoding each image on its own
(``tests/reference_rows.py``).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psicbatch.decisions import CLASSIFIER, Rule
from psicbatch.preprocess import resize_probabilities
from psicbatch.roi import RegionOfInterest
from psicbatch.run import rle
from psicbatch.run.rows import ResultRow
from psicbatch.tiles import TileGrid


@dataclass
class MaskSummary:
    """Host-side results of one batch, in the order of its decoded images."""

    probabilities: np.ndarray  # float32 N
    seg_max: np.ndarray  # float32 N: highest pixel probability at the original size
    area: np.ndarray  # int64 N: defect pixels
    bbox: np.ndarray  # int64 N x 4: x, y, w, h (zeros where the mask is empty)
    sizes: list[tuple[int, int]]
    # Non-empty masks: where their column-major values change, and their first value.
    runs: dict[int, tuple[np.ndarray, bool]] = field(default_factory=dict)
    tiles: list[dict[str, int]] | None = None  # tiled models: the deciding tile per image


Gate = Callable[[torch.Tensor], torch.Tensor]  # image probabilities -> which need masks
# (size, positions, their index tensor or None for the whole batch) -> maps at that size
MapSource = Callable[[tuple[int, int], list[int], torch.Tensor | None], torch.Tensor]


def summarize_masks(
    probabilities: torch.Tensor,
    segmentation: torch.Tensor,
    sizes: list[tuple[int, int]],
    threshold: float,
    roi: RegionOfInterest | None = None,
    gate: Gate | None = None,
) -> MaskSummary:
    """Engine outputs (N and N x H x W, on any device) -> the batch's ``MaskSummary``;
    with ``roi``, pixels outside the region of interest count as defect-free; with
    ``gate``, only the images it keeps get an area, a box and run boundaries (every
    image gets its highest pixel probability)."""

    def resized(size: tuple[int, int], _: list[int], index: torch.Tensor | None) -> torch.Tensor:
        group = segmentation if index is None else segmentation[index]
        return resize_probabilities(group[:, None], size)[:, 0]

    return _summarize(probabilities, resized, sizes, threshold, roi, gate, segmentation.device)


def summarize_tiles(
    probabilities: torch.Tensor,
    segmentation: torch.Tensor,
    grids: list[TileGrid],
    threshold: float,
    roi: RegionOfInterest | None = None,
    gate: Gate | None = None,
) -> MaskSummary:
    """Tile outputs (every grid's tiles in order) -> one ``MaskSummary`` of the images:
    each image's tiles stitched at its size, its probability the highest tile's. Images
    of one size are stitched into one tensor and summarized together, and the deciding
    tiles come back in one copy: a batch waits for the device once more than an untiled
    one, not several times per image."""
    starts = np.cumsum([0, *(len(grid.origins) for grid in grids)]).tolist()
    spans = [slice(start, end) for start, end in itertools.pairwise(starts)]
    highest = [probabilities[span].max(dim=0) for span in spans]  # first highest, as argmax

    def stitched(
        size: tuple[int, int], positions: list[int], _: torch.Tensor | None
    ) -> torch.Tensor:
        maps = torch.empty((len(positions), *size), device=segmentation.device)
        for row, position in enumerate(positions):
            grids[position].stitch(segmentation[spans[position]], out=maps[row])
        return maps

    image_probabilities = torch.stack([best.values for best in highest])
    sizes = [grid.size for grid in grids]
    device = segmentation.device
    summary = _summarize(image_probabilities, stitched, sizes, threshold, roi, gate, device)
    (deciding,) = _to_host([torch.stack([best.indices for best in highest])])
    summary.tiles = [grid.tile_box(int(i)) for grid, i in zip(grids, deciding, strict=True)]
    return summary


def _summarize(
    probabilities: torch.Tensor,
    maps_at: MapSource,
    sizes: list[tuple[int, int]],
    threshold: float,
    roi: RegionOfInterest | None,
    gate: Gate | None,
    device: torch.device,
) -> MaskSummary:
    """``summarize_masks`` for the probability maps on ``device`` that ``maps_at`` gives
    per size group."""
    wanted = gate(probabilities.to(device)) if gate is not None else None
    count = len(sizes)
    seg_max = torch.empty(count, device=device)
    area = torch.zeros(count, dtype=torch.int64, device=device)
    bbox = torch.zeros((count, 4), dtype=torch.int64, device=device)
    runs: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []  # positions, changes, firsts
    for size, positions in _size_groups(sizes).items():
        index = _on_device(positions, device)
        whole = positions == list(range(count))  # one size for the batch: no copy needed
        maps = maps_at(size, positions, None if whole else index)
        if roi is not None:
            maps = maps * roi.at(size, device)
        maxima = maps.amax(dim=(1, 2))
        seg_max[index] = maxima
        hit = maxima >= threshold
        if wanted is not None:
            hit &= wanted if whole else wanted[index]
        found = torch.nonzero(hit).flatten()
        hits = found.tolist()  # the one small wait of the group
        if not hits:
            continue
        every = len(hits) == len(positions)
        defect = maps >= threshold if every else maps[found] >= threshold
        where = index if every else index[found]
        row_counts = defect.view(torch.uint8).sum(dim=2, dtype=torch.int32)
        area[where] = row_counts.sum(dim=1).long()
        bbox[where] = _boxes(row_counts > 0, defect.any(dim=1))
        flat = defect.transpose(1, 2).reshape(len(hits), -1)  # column-major, as COCO RLE
        runs.append(([positions[h] for h in hits], *_run_boundaries(flat)))
    host = _to_host(
        [probabilities.float(), seg_max, area, bbox]
        + [tensor for _, changes, firsts in runs for tensor in (changes, firsts)]
    )
    summary = MaskSummary(
        host[0].numpy(), host[1].numpy(), host[2].numpy(), host[3].numpy(), list(sizes)
    )
    for group_number, (positions, _, _) in enumerate(runs):
        changes, firsts = (t.numpy() for t in host[4 + 2 * group_number : 6 + 2 * group_number])
        pixels = sizes[positions[0]][0] * sizes[positions[0]][1]
        # Changes are sorted by image (row of ``flat``), then position: split by image.
        bounds = np.searchsorted(changes, np.arange(len(positions) + 1) * pixels)
        for row, position in enumerate(positions):
            within = changes[bounds[row] : bounds[row + 1]] - row * pixels
            summary.runs[position] = (within, bool(firsts[row]))
    return summary


def _on_device(values: list[int], device: torch.device) -> torch.Tensor:
    """An index tensor on ``device``: from pinned memory, without waiting, on a GPU."""
    host = torch.tensor(values, pin_memory=device.type == "cuda")
    return host.to(device, non_blocking=True)


def _run_boundaries(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K flattened masks -> (the positions i where mask[i] != mask[i - 1], counted over
    all K masks laid end to end, sorted; each mask's first value), on ``flat``'s device.
    On a CPU numpy finds them (its flatnonzero is several times faster than torch's
    nonzero there); elsewhere torch does, on the device."""
    boundaries = boundaries_numpy if flat.device.type == "cpu" else boundaries_torch
    return boundaries(flat), flat[:, 0]


def boundaries_torch(flat: torch.Tensor) -> torch.Tensor:
    differs = torch.zeros_like(flat)
    torch.ne(flat[:, 1:], flat[:, :-1], out=differs[:, 1:])
    changes = torch.nonzero(differs.view(-1)).flatten()
    return changes.to(torch.int32) if flat.numel() < 2**31 else changes


def boundaries_numpy(flat: torch.Tensor) -> torch.Tensor:
    masks = flat.numpy()
    pixels = masks.shape[1]
    changes = [
        np.flatnonzero(mask[1:] != mask[:-1]) + (1 + row * pixels) for row, mask in enumerate(masks)
    ]
    return torch.from_numpy(np.concatenate(changes))


def _size_groups(sizes: list[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for position, (height, width) in enumerate(sizes):
        groups[height, width].append(position)
    return groups


def _boxes(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """x, y, w, h of non-empty masks, from whether each row (K x H) and each column (K x W)
    holds a defect pixel."""
    rows, cols = rows.to(torch.uint8), cols.to(torch.uint8)
    top, left = rows.argmax(dim=1), cols.argmax(dim=1)  # first True
    bottom = rows.shape[1] - 1 - rows.flip(1).argmax(dim=1)
    right = cols.shape[1] - 1 - cols.flip(1).argmax(dim=1)
    return torch.stack([left, top, right - left + 1, bottom - top + 1], dim=1)


def _to_host(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copy to the host: from a GPU into pinned memory, all started before one wait."""
    on_gpu = [tensor.device for tensor in tensors if tensor.is_cuda]
    if not on_gpu:
        return [t.cpu() for t in tensors]
    copies = []
    for tensor in tensors:
        target = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        copies.append(target.copy_(tensor, non_blocking=True))
    torch.cuda.current_stream(on_gpu[0]).synchronize()
    return copies


def result_rows(
    items: list[tuple[int, Path]],
    positions: list[int],
    summary: MaskSummary,
    classification_threshold: float,
    gated: bool = False,
    rule: Rule = CLASSIFIER,
) -> list[dict[str, Any]]:
    """One row per decoded image of a batch; ``positions`` are their places in ``items``.
    ``gated``: images judged defect-free get an empty mask (area 0, no box). ``rule``:
    how the image probability and the mask area make the decision."""
    rows = []
    decided = rule.defective(summary.probabilities >= classification_threshold, summary.area)
    for image, position in enumerate(positions):
        index, path = items[position]
        height, width = summary.sizes[image]
        probability = summary.probabilities[image]
        is_defect = bool(decided[image])
        runs = summary.runs.get(image) if is_defect or not gated else None
        x, y, w, h = (int(v) for v in summary.bbox[image])
        row = ResultRow.for_file(
            index,
            path,
            width=width,
            height=height,
            probability=float(probability),
            is_defect=is_defect,
            mask=rle.empty((height, width))
            if runs is None
            else rle.encode_changes(*runs, (height, width)),
            mask_area=0 if runs is None else int(summary.area[image]),
            mask_bbox=None if runs is None else {"x": x, "y": y, "w": w, "h": h},
            seg_max=float(summary.seg_max[image]),
            tile=summary.tiles[image] if summary.tiles is not None else None,
        )
        rows.append(row.as_dict())
    return rows
