"""Batched post-processing equals the per-image reference, row for row, byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psicbatch.decisions import CLASSIFIER, Rule
from psicbatch.run import rle
from psicbatch.run.postprocess import result_rows, summarize_masks, summarize_tiles
from psicbatch.tiles import TileGrid
from tests.reference_rows import result_row

ENGINE_SIZE = (24, 16)
THRESHOLD = 0.6


def maps_with_cases(count: int, seed: int) -> torch.Tensor:
    """Random probability maps, the first ones made into the edge cases."""
    rng = np.random.default_rng(seed)
    maps = rng.random((count, *ENGINE_SIZE), dtype=np.float32)
    maps[0] = 0.1  # empty
    maps[1] = 0.99  # full
    maps[2] = 0.1
    maps[2, 5, 7] = 0.9  # one pixel
    maps[3] = 0.1
    maps[3, -1, -1] = THRESHOLD  # exactly at the threshold, in the last corner
    return torch.from_numpy(maps)


def check_rows(maps: torch.Tensor, sizes: list[tuple[int, int]], seed: int) -> None:
    probabilities = torch.from_numpy(np.random.default_rng(seed).random(len(maps), np.float32))
    items = [(10 + i, Path(f"image{i}.png")) for i in range(len(maps))]
    summary = summarize_masks(probabilities, maps, sizes, THRESHOLD)
    rows = result_rows(items, list(range(len(maps))), summary, 0.5)
    for i, row in enumerate(rows):
        expected = result_row(
            items[i][0],
            items[i][1],
            probabilities.numpy()[i],
            maps.numpy()[i],
            sizes[i],
            0.5,
            THRESHOLD,
        )
        assert row == expected, f"image {i} of size {sizes[i]}"


SIZES = [ENGINE_SIZE, (48, 32), (7, 5), (1, 1), (100, 3), (24, 16), (13, 40), (48, 32)]


def test_edge_cases_at_many_sizes_equal_the_reference() -> None:
    """Originals equal to, larger and smaller than the engine size, in mixed groups."""
    check_rows(maps_with_cases(len(SIZES), 0), SIZES, 0)


def test_empty_and_full_masks() -> None:
    maps = maps_with_cases(4, 1)
    summary = summarize_masks(torch.zeros(4), maps, [ENGINE_SIZE] * 4, THRESHOLD)
    assert 0 not in summary.runs and summary.area[0] == 0  # empty: nothing crosses over
    assert summary.runs[1][0].size == 0 and summary.runs[1][1]  # full: one run, defect first
    changes, first = summary.runs[3]  # one pixel at x 15, y 23: the very last one
    assert list(changes) == [ENGINE_SIZE[0] * ENGINE_SIZE[1] - 1] and not first
    assert summary.area[1] == ENGINE_SIZE[0] * ENGINE_SIZE[1]
    assert summary.area[2] == 1 and list(summary.bbox[2]) == [7, 5, 1, 1]
    assert summary.area[3] == 1 and list(summary.bbox[3]) == [15, 23, 1, 1]
    rows = result_rows([(i, Path(str(i))) for i in range(4)], [0, 1, 2, 3], summary, 0.5)
    assert rows[0]["mask"] == rle.encode(np.zeros((24, 16), bool)) == rle.empty((24, 16))
    assert rows[0]["mask_bbox"] is None


def test_rows_go_to_their_positions_around_errors() -> None:
    maps = maps_with_cases(4, 2)[:3]
    items = [(i, Path(f"f{i}")) for i in range(5)]
    summary = summarize_masks(torch.full((3,), 0.7), maps, [ENGINE_SIZE] * 3, THRESHOLD)
    rows = result_rows(items, [0, 2, 4], summary, 0.5)
    assert [row["input_index"] for row in rows] == [0, 2, 4]


@pytest.mark.parametrize("rule", [CLASSIFIER, Rule("both", 3)])
def test_a_gate_leaves_out_masks_that_gated_rows_would_not_show(rule: Rule) -> None:
    """Images the probability judges defect-free get no area, box or runs, and a gated
    run's rows are the same as with every mask computed."""
    maps = maps_with_cases(8, 3)
    probabilities = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.5, 0.49])
    items = [(i, Path(f"f{i}")) for i in range(8)]
    every = summarize_masks(probabilities, maps, [(48, 32)] * 8, THRESHOLD)
    gated = summarize_masks(probabilities, maps, [(48, 32)] * 8, THRESHOLD, gate=lambda p: p >= 0.5)
    kept = {i for i in range(8) if probabilities[i] >= 0.5 and every.area[i] > 0}
    assert set(gated.runs) == kept and set(every.runs) > kept
    assert all(gated.area[i] == 0 and not gated.bbox[i].any() for i in range(8) if i not in kept)
    assert np.array_equal(gated.seg_max, every.seg_max)
    rows = [
        result_rows(items, list(range(8)), s, 0.5, gated=True, rule=rule) for s in (every, gated)
    ]
    assert rows[0] == rows[1]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 60), st.integers(1, 60)), min_size=1, max_size=6),
    st.integers(0, 2**16),
)
def test_random_masks_and_sizes_equal_the_reference(sizes: list, seed: int) -> None:
    rng = np.random.default_rng(seed)
    maps = torch.from_numpy(rng.random((len(sizes), *ENGINE_SIZE), dtype=np.float32))
    check_rows(maps, [tuple(size) for size in sizes], seed)


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 40])
def test_run_length_compression_matches_pycocotools(count: int) -> None:
    from pycocotools import mask as coco

    rng = np.random.default_rng(count)
    mask = np.zeros((300, 200), bool)
    for _ in range(count):
        y, x = rng.integers(0, 290), rng.integers(0, 190)
        mask[y : y + rng.integers(1, 10), x : x + rng.integers(1, 10)] = True
    expected = coco.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
    assert rle.encode(mask)["counts"] == expected
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    assert rle.encode_changes(changes, bool(flat[0]), mask.shape)["counts"] == expected


def test_run_boundaries_are_the_same_from_torch_and_numpy() -> None:
    """The GPU finds run boundaries with torch, the CPU with numpy: same positions."""
    from psicbatch.run.postprocess import boundaries_numpy, boundaries_torch

    rng = np.random.default_rng(7)
    masks = torch.from_numpy(rng.random((4, 300)) < 0.1)
    masks[1] = True  # one run only
    masks[2] = False  # no defect at all (never handed over, but well defined)
    expected = boundaries_numpy(masks)
    assert torch.equal(boundaries_torch(masks).long(), expected.long())
    first = masks[0].numpy()
    assert list(expected[expected < 300]) == list(np.flatnonzero(first[1:] != first[:-1]) + 1)


@pytest.mark.parametrize("gated", [False, True])
def test_tiled_batches_equal_each_image_stitched_and_summarized_alone(gated: bool) -> None:
    """Images of two sizes, interleaved, one below a tile: summarized together per size,
    each image's probability, deciding tile, mask and box are its own."""
    grids = [TileGrid((50, 140), (32, 32), 8), TileGrid((20, 25), (32, 32), 8)]
    grids = [grids[0], grids[1], grids[0], grids[0]]
    rng = np.random.default_rng(7)
    counts = [len(grid.origins) for grid in grids]
    probabilities = torch.from_numpy(rng.random(sum(counts), np.float32))
    segmentation = torch.from_numpy(rng.random((sum(counts), 32, 32), np.float32) ** 4)
    gate = (lambda p: p >= 0.95) if gated else None
    summary = summarize_tiles(probabilities, segmentation, grids, THRESHOLD, gate=gate)
    start = 0
    for image, (grid, count) in enumerate(zip(grids, counts, strict=True)):
        span = slice(start, start + count)
        probability, tile = grid.deciding_tile(probabilities[span])
        stitched = grid.stitch(segmentation[span])[None]
        alone = summarize_masks(
            torch.tensor([probability]), stitched, [grid.size], THRESHOLD, gate=gate
        )
        assert summary.probabilities[image] == alone.probabilities[0]
        assert summary.tiles is not None and summary.tiles[image] == tile
        assert summary.sizes[image] == grid.size
        assert summary.seg_max[image] == pytest.approx(alone.seg_max[0], abs=1e-6)
        assert summary.area[image] == alone.area[0]
        assert (summary.bbox[image] == alone.bbox[0]).all()
        assert (image in summary.runs) == (0 in alone.runs)
        if 0 in alone.runs:
            assert (summary.runs[image][0] == alone.runs[0][0]).all()
        start += count
    assert (len(summary.runs) < len(grids)) == gated
