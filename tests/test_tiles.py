"""Large images in tiles: the grid, seamless stitching, a thin crack found at native
resolution that resizing loses, and training on tiles."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from psicbatch.api import Inspector
from psicbatch.assets import demo_model_path
from psicbatch.checkpoint import load_checkpoint, save_checkpoint
from psicbatch.cli import main
from psicbatch.commands.training import tile_overlap
from psicbatch.data import memory
from psicbatch.data.images import read_image
from psicbatch.data.layouts import read_dataset
from psicbatch.data.synth import defect_mask, generate, texture
from psicbatch.engines.spec import EngineSpec
from psicbatch.errors import PsicbatchError
from psicbatch.run import rle
from psicbatch.run.heartbeat import Tiles
from psicbatch.run.options import RunOptions
from psicbatch.run.stages import StageTimeout
from psicbatch.run.worker import Worker
from psicbatch.tiles import TileGrid, axis_origins
from tests.run_processes import wait_for


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(6000, 128, 16), (129, 128, 16), (300, 64, 0)]
)
def test_the_grid_covers_the_axis_with_at_least_the_overlap(
    length: int, tile: int, overlap: int
) -> None:
    origins = axis_origins(length, tile, overlap)
    assert origins[0] == 0 and origins[-1] + tile == length
    shared = [a + tile - b for a, b in itertools.pairwise(origins)]
    assert min(shared) >= overlap and max(shared) - min(shared) <= 1  # evenly spread
    assert axis_origins(100, 128, 16) == [0]


def test_stitching_has_no_seams() -> None:
    """Tiles cut from one map stitch back to exactly that map, tile borders included."""
    rng = np.random.default_rng(0)
    truth = rng.random((300, 500)).astype(np.float32)
    grid = TileGrid((300, 500), (64, 96), overlap=12)
    tiles = torch.from_numpy(grid.cut(truth[:, :, None]))[:, 0]
    assert torch.allclose(grid.stitch(tiles), torch.from_numpy(truth), atol=1e-6)
    small = TileGrid((40, 50), (64, 96), overlap=12)  # padded to one tile, cropped back
    tiles = torch.from_numpy(small.cut(truth[:40, :50, None]))[:, 0]
    assert tiles.shape == (1, 64, 96)
    assert torch.allclose(small.stitch(tiles), torch.from_numpy(truth[:40, :50]))


def tiled_demo(path: Path) -> Path:
    """The demo model (trained on 128x128 synthetic images) applied in 128x128 tiles."""
    checkpoint = load_checkpoint(demo_model_path())
    checkpoint.preprocessing = replace(checkpoint.preprocessing, tile_overlap=16)
    return save_checkpoint(checkpoint, path)


def line_scan_image(height: int = 1500, width: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    """A 6000x1500 surface with one crack about 3 pixels wide and 50 long."""
    rng = np.random.default_rng(11)
    surface = texture(rng, "grain", height, width)
    crack = np.zeros((height, width), bool)
    local = defect_mask(np.random.default_rng(5), "scratch", 128, 128)
    top, left = height // 2 - 50, width // 2 + 37  # not on a tile boundary's middle
    crack[top : top + 128, left : left + 128] = local
    image = np.clip(surface - 60 * crack, 0, 255).astype(np.uint8)
    return image, crack


def test_a_tiled_model_finds_a_thin_crack_that_resizing_loses(tmp_path: Path) -> None:
    """3000x750: resized to 128x128 (23 and 6 times smaller), the crack is a fraction of
    a pixel wide (at 6000x1500 the test took 10 s, 3 s at this size on a 2-core AVX2
    EPYC)."""
    image, crack = line_scan_image(750, 3000)
    widths = crack.sum(axis=0)
    assert 2 <= np.median(widths[widths > 0]) <= 5  # a crack a few pixels wide
    path = tmp_path / "line.png"
    Image.fromarray(image).save(path)
    with Inspector(tiled_demo(tmp_path / "tiled.pt"), device="cpu", precision="fp32") as tiled:
        found = next(iter(tiled.inspect([path])))
    with Inspector(demo_model_path(), device="cpu", precision="fp32") as resized:
        missed = next(iter(resized.inspect([path])))
    assert found.is_defect and found.size == (750, 3000)
    mask = found.mask()
    assert mask.shape == crack.shape and (mask & crack).sum() >= 0.3 * crack.sum()
    assert (mask & ~crack).sum() < crack.sum()  # the rest of the line stays clean
    assert not missed.is_defect


def test_a_tiled_run_records_the_deciding_tile(tmp_path: Path) -> None:
    image, _ = line_scan_image(300, 1000)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(image).save(folder / "a.png")
    Image.fromarray(image[:100, :90]).save(folder / "small.png")  # below one tile
    out = tmp_path / "r.parquet"
    args = ["run", str(folder), "--model", str(tiled_demo(tmp_path / "t.pt")), "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "--masks", "all", "-q"])
    assert result.exit_code == 0, result.output
    rows = {Path(row["path"]).name: row for row in pq.read_table(out).to_pylist()}
    assert rle.decode(rows["a.png"]["mask"]).shape == (300, 1000)  # one mask, original size
    assert rows["a.png"]["tile"]["w"] == 128 and rows["small.png"]["tile"]["w"] == 90
    assert rle.decode(rows["small.png"]["mask"]).shape == (100, 90)


def test_a_slow_tiled_batch_whose_engine_calls_move_on_is_not_taken_for_hung(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One image of 15 tiles, one tile per engine call, 0.1 s each: the batch takes 1.5 s
    or more, twice --batch-timeout, while each call moves it on. A worker whose calls did
    not beat would be stopped as hung. (With a timeout of 0.5 s, the test failed once on
    a loaded machine.)"""
    image, _ = line_scan_image(300, 500)
    Image.fromarray(image).save(tmp_path / "a.png")
    spec = EngineSpec(checkpoint=tiled_demo(tmp_path / "t.pt"), precision="fp32")
    options = RunOptions(out=tmp_path / "r.parquet", decoder="pil", devices=("cpu",), batch_size=1)
    others = set(threading.enumerate())  # of the tests before, which may still be ending
    worker = Worker(spec, options, "cpu", threads=1)
    calls = []
    infer = worker.engine.infer

    def slow_infer(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(len(images))
        time.sleep(0.1)
        return infer(images)

    monkeypatch.setattr(worker.engine, "infer", slow_infer)
    tasks = [(0, [(0, tmp_path / "a.png")])]
    (_, rows, _), *_ = list(worker.process(iter(tasks), batch_timeout=0.75))
    assert calls == [1] * 15 and rows[0]["error"] is None
    monkeypatch.setattr(worker.heartbeat, "beat", lambda: None)
    monkeypatch.setattr(worker.heartbeat, "tiles_inferred", lambda *told: None)
    with pytest.raises(StageTimeout, match=r"no batch result and no progress within 0\.75 s"):
        list(worker.process(iter(tasks), batch_timeout=0.75))
    wait_for(
        lambda: (
            not [t for t in set(threading.enumerate()) - others if t.name.startswith("psicbatch-")]
        )
    )


def test_an_inspector_tells_its_caller_how_far_a_tiled_batch_is(tmp_path: Path) -> None:
    """Line software showing its own progress: each batch of one 300x500 image is 15
    tiles, one per engine call; the caller hears the tiles inferred as they grow, and None
    as each batch's inference ends, from a thread of the Inspector's. An untiled model's
    batches tell nothing."""
    image, _ = line_scan_image(300, 500)
    told: list[Tiles | None] = []
    callers: set[threading.Thread] = set()

    def progress(tiles: Tiles | None) -> None:
        told.append(tiles)
        callers.add(threading.current_thread())

    model = tiled_demo(tmp_path / "t.pt")
    with Inspector(model, device="cpu", batch_size=1, progress=progress) as inspector:
        results = list(inspector.inspect([image, image[::-1]]))
    assert [result.error for result in results] == [None, None]
    assert told[-1] is None and threading.main_thread() not in callers
    batches: list[list[Tiles]] = [[]]
    for tiles in told[:-1]:
        if tiles is None:  # a batch's inference ended
            batches.append([])
        else:
            batches[-1].append(tiles)
    assert len(batches) == 2
    for batch in batches:
        inferred = [tiles.inferred for tiles in batch]
        assert inferred[0] == 1 and inferred == sorted(set(inferred)) and inferred[-1] < 15
        assert batch == [Tiles(n, 15, n / 15) for n in inferred]
    told.clear()
    with Inspector(device="cpu", batch_size=1, progress=progress) as untiled:
        list(untiled.inspect([image[:128, :128]] * 3))
    assert told == []


@pytest.mark.parametrize("workers", [1, 2])
def test_the_progress_line_tells_the_first_batch_and_the_tiles_inferred(
    tmp_path: Path, workers: int
) -> None:
    """A first batch of large images through a tiled model can take minutes on a CPU: the
    line said "opening the engine" until it was done, then nothing moved within a batch.
    It tells the engines' opening from the first batch, and the tiles inferred so far in
    the batches under way (here 4 engine calls of 4 tiles per batch); none is left once
    the batches are done."""
    from psicbatch.commands.run import images_done, run_status
    from psicbatch.run.runner import RunSummary, run

    generate(tmp_path, 8, (150, 190), defect_rate=0.5, seed=21)  # 4 tiles each
    seen: list[tuple[int, bool, Tiles | None]] = []
    lines: list[str] = []
    done: list[float] = []

    def note(summary: RunSummary) -> None:
        seen.append((summary.images, summary.engines_open, summary.tiles))
        lines.append(run_status(summary, 1.0))
        done.append(images_done(summary))

    paths = sorted((tmp_path / "images").iterdir())
    spec = EngineSpec(checkpoint=tiled_demo(tmp_path / "t.pt"), precision="fp32")
    options = RunOptions(tmp_path / "r.parquet", batch_size=4, workers=workers,
                         devices=("cpu",), decoder="pil")  # fmt: skip
    run(paths, spec, options, note)
    assert seen[:2] == [(0, False, None), (0, True, None)]  # checked, then the engines opened
    assert lines[:2] == ["opening the engine", "first batch"]
    assert seen[-1] == (len(paths), True, None)
    told = [tiles for _, _, tiles in seen if tiles is not None]
    assert told and all(0 < t.inferred < t.total and t.total % 16 == 0 for t in told)
    assert all(t.images == 4 * t.inferred / 16 for t in told)  # 4 images of 4 tiles a batch
    first = next(i for i, (_, _, tiles) in enumerate(seen) if tiles is not None)
    assert lines[first].startswith("first batch  tiles inferred ")
    assert 0 < done[first] < 4 and done[-1] == len(paths)  # the bar moves within a batch


def test_a_watchs_status_line_tells_the_tiles_inferred(tmp_path: Path) -> None:
    """A watch of line-scan images showed "waiting for files" while a tiled batch took
    minutes; it says how far the batch is, and nothing of it once its rows are in."""
    from psicbatch.run.watch import WatchOptions, WatchStatus, watch

    generate(tmp_path / "line", 4, (150, 190), defect_rate=0.5, seed=21)  # 4 tiles each
    lines: list[str] = []

    class Enough(Exception):
        """The first batch's rows are in."""

    def status(result: WatchStatus) -> None:
        lines.append(result.line())
        if result.images:
            raise Enough

    spec = EngineSpec(checkpoint=tiled_demo(tmp_path / "t.pt"), precision="fp32")
    options = RunOptions(tmp_path / "results", batch_size=4, devices=("cpu",), decoder="pil")
    with pytest.raises(Enough):
        watch(spec, options, WatchOptions(tmp_path / "line" / "images", settle_seconds=0), status)
    assert lines[0] == "0 images, waiting for files"
    told = [line for line in lines if "tiles" in line]
    assert told and all(line.startswith("0 images, inspecting; tiles inferred ") for line in told)
    assert lines[-1].startswith("4 images, ") and "tiles" not in lines[-1]


@pytest.mark.slow
def test_worker_processes_tell_their_parent_of_a_slow_batchs_progress(tmp_path: Path) -> None:
    """Two spawned workers, each with a 6000x1500 image in 756 tiles: seconds per batch,
    far beyond a --batch-timeout of 0.5 s, while their engine calls move on."""
    image, _ = line_scan_image()
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(image).save(folder / name)
    out = tmp_path / "r.parquet"
    model = str(tiled_demo(tmp_path / "t.pt"))
    args = ["run", str(folder), "--model", model, "-o", str(out), "--device", "cpu", "-q"]
    slow = ["--workers", "2", "--batch-size", "1", "--batch-timeout", "0.5"]
    result = CliRunner().invoke(main, [*args, *slow])
    assert result.exit_code == 0, result.output
    assert [row["error"] for row in pq.read_table(out).to_pylist()] == [None, None]


@pytest.mark.slow
def test_ray_actors_tell_the_driver_of_a_slow_batchs_progress(tmp_path: Path) -> None:
    """Under --executor ray the timeout counted whole batches: 6000x1500 images in 756
    tiles each, on one actor's one core, took seconds per batch and were stopped as
    hung under a --batch-timeout of 2 s, while their engine calls moved on. The actors'
    tiles reach the progress line too."""
    pytest.importorskip("ray", reason="Ray is an optional extra")
    from psicbatch.commands.run import run_status
    from psicbatch.run.ray_executor import ray_results
    from psicbatch.run.runner import RunSummary, run

    image, _ = line_scan_image()
    paths = [tmp_path / name for name in ("a.png", "b.png", "c.png")]
    for path in paths:
        Image.fromarray(image).save(path)
    spec = EngineSpec(checkpoint=tiled_demo(tmp_path / "t.pt"), precision="fp32")
    options = RunOptions(tmp_path / "r.parquet", batch_size=1, devices=("cpu",),
                         decoder="pil", batch_timeout=2)  # fmt: skip
    told: list[Tiles | None] = []
    lines: list[str] = []

    def note(summary: RunSummary) -> None:
        told.append(summary.tiles)
        lines.append(run_status(summary, 1.0))

    summary = run(paths, spec, options, note, ray_results)
    assert summary.images == 3 and summary.errors == 0
    assert summary.stage_seconds["inference"] > 0 and len(summary.latencies) == 3
    under_way = [tiles for tiles in told if tiles is not None]
    assert under_way and all(0 < tiles.inferred < tiles.total == 756 for tiles in under_way)
    assert told[-1] is None
    assert lines[0] == "opening the engine"
    assert lines[told.index(under_way[0])].startswith("first batch  tiles inferred ")


def test_train_on_tiles_records_the_tiling(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate(data, 4, (160, 224), defect_rate=0.5, seed=2)
    model = tmp_path / "tiles.pt"
    tiny = ["--width", "0.125", "--seg-epochs", "1", "--cls-epochs", "1", "-q"]
    base = ["train", str(data), "-o", str(model), "--tile", "64x64", *tiny]
    result = CliRunner().invoke(main, [*base, "--overlap", "8"])
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(model)
    assert checkpoint.preprocessing.input_size == (64, 64)
    assert checkpoint.preprocessing.tile_overlap == 8
    assert checkpoint.training["options"]["tile_overlap"] == 8
    wide = CliRunner().invoke(main, [*base, "--overlap", "32"])
    assert wide.exit_code == 2
    assert "--overlap: 32 is not below half the tile (64x64: at most 31)" in wide.output


def test_the_default_overlap_fits_small_tiles() -> None:
    assert tile_overlap((512, 256), None) == 32  # the default where it fits
    assert tile_overlap((64, 48), None) == 23 and tile_overlap((65, 66), None) == 32
    assert tile_overlap((64, 64), 0) == 0 and tile_overlap((64, 64), 31) == 31


def test_training_tiles_are_defective_where_their_part_of_the_mask_is(tmp_path: Path) -> None:
    generate(tmp_path, 4, (160, 224), defect_rate=0.5, seed=2)
    samples = read_dataset(tmp_path, "folder")
    tiles = memory.load_tiles(samples, (64, 64), 8, 1)
    grids = [TileGrid((160, 224), (64, 64), 8) for _ in samples]
    expected = [
        bool(mask_tile.any())
        for sample, grid in zip(samples, grids, strict=True)
        for mask_tile in grid.cut(memory.defect_mask(sample, (160, 224))[:, :, None])
    ]
    assert tiles.labels.tolist() == expected and 0 < sum(expected) < len(expected)
    assert torch.equal(tiles.masks[:].flatten(1).any(dim=1), tiles.labels)


def test_training_tiles_of_images_of_several_sizes_and_rotations(tmp_path: Path) -> None:
    """The grids come from the headers, sizes after EXIF rotation; the tiles are those of
    the decoded images, in order."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 255, (100, 150), np.uint8)).save(tmp_path / "images/a.png")
    mask = np.zeros((100, 150), np.uint8)
    mask[10:30, 100:140] = 255
    Image.fromarray(mask).save(tmp_path / "masks/a.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 80 high, 120 wide; shown rotated: 120 high, 80 wide
    stored = Image.fromarray(rng.integers(0, 255, (80, 120), np.uint8))
    stored.save(tmp_path / "images/b.jpg", exif=exif.tobytes())
    samples = read_dataset(tmp_path, "folder")
    tiles = memory.load_tiles(samples, (64, 64), 8, 1)
    decoded = [read_image(sample.image_path, 1) for sample in samples]
    assert [image.shape[:2] for image in decoded] == [(100, 150), (120, 80)]
    expected = np.concatenate([TileGrid(d.shape[:2], (64, 64), 8).cut(d) for d in decoded])
    assert np.array_equal(tiles.images.numpy(), expected)
    # a: 2 x 3 tiles, x from 0, 43, 86 (the defect, x 100-139, y 10-29, is in the first
    # row's last two); b: 2 x 2 tiles, none defective
    assert tiles.labels.tolist() == [False, True, True] + [False] * 7


def test_a_file_that_decodes_to_another_size_than_its_header_is_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate(tmp_path, 2, (96, 96), defect_rate=0.0, seed=1)
    monkeypatch.setattr(memory, "image_size", lambda path, depth: (96, 160))  # a lying header
    samples = read_dataset(tmp_path, "folder")
    with pytest.raises(PsicbatchError, match=r"synth_00000.png: decodes to 96x96 .* says 160x96"):
        memory.load_tiles(samples, (64, 64), 8, 1)


def test_eval_scores_a_tiled_model_as_run_inspects_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate(data, 4, (200, 300), defect_rate=0.5, seed=7)
    model = tiled_demo(tmp_path / "tiled.pt")
    report, out = tmp_path / "report", tmp_path / "r.parquet"
    common = ["--device", "cpu", "--precision", "fp32", "-q"]
    result = CliRunner().invoke(main, ["eval", str(model), str(data), "-o", str(report), *common])
    assert result.exit_code == 0, result.output
    run = CliRunner().invoke(
        main, ["run", str(data / "images"), "--model", str(model), "-o", str(out), *common]
    )
    assert run.exit_code == 0, run.output
    scored = {
        Path(r["path"]).name: r["probability"]
        for r in pq.read_table(report / "predictions.parquet").to_pylist()
    }
    inspected = {Path(r["path"]).name: r["probability"] for r in pq.read_table(out).to_pylist()}
    assert scored.keys() == inspected.keys()
    assert all(abs(scored[name] - inspected[name]) < 1e-5 for name in scored)


def test_a_built_engine_tiles_as_its_checkpoint_does(tmp_path: Path) -> None:
    """Engines take tiles as their input: no special graph, the manifest keeps the tiling.
    A torch engine stands for every backend here: they share the manifest and the run
    path, and ONNX graphs take any size in multiples of 8 (test_engines)."""
    from psicbatch.engines.build import BuildOptions, build_engine

    image, _ = line_scan_image(300, 1000)
    Image.fromarray(image).save(tmp_path / "a.png")
    model = tiled_demo(tmp_path / "t.pt")
    options = BuildOptions(
        backend="torch", precision="fp32", max_batch=8, out=tmp_path / "e", device="cpu"
    )
    directory, manifest = build_engine(model, options)
    assert manifest.engine_preprocessing().tile_overlap == 16
    with Inspector(directory, device="cpu") as engine:
        built = next(iter(engine.inspect([tmp_path / "a.png"])))
    with Inspector(model, device="cpu", precision="fp32") as checkpoint:
        direct = next(iter(checkpoint.inspect([tmp_path / "a.png"])))
    assert built.size == direct.size == (300, 1000)
    assert abs(built.probability - direct.probability) < 1e-4
    assert abs(built.mask_area - direct.mask_area) <= 2  # float rounding at the threshold
