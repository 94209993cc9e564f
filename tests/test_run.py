"""psicbatch run end to end on CPU: both decoders, several workers, bad files, resume."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as coco

from psicbatch.assets import demo_model_path
from psicbatch.cli import main
from psicbatch.data.images import read_image
from psicbatch.data.synth import generate
from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.errors import PsicbatchError
from psicbatch.output_lock import OutputLock
from psicbatch.preprocess import Preprocessing, normalize
from psicbatch.run import decode, rle
from psicbatch.run.decode import (
    MAX_DECODING_BATCHES,
    DaliDecoder,
    DecoderPool,
    PilDecoder,
    concurrent_batches,
    decoder_name,
    make_decoder,
)
from psicbatch.run.inputs import collect_inputs
from psicbatch.run.job import resolved_sources
from psicbatch.run.output import read_metadata
from tests.reference_rows import assert_same_results, result_row
from tests.run_processes import CONSOLE, command_line, descendants, killed_run, wait_for
from tests.stops import main_thread_only, send_stop
from tests.test_layouts import make_dagm, make_kolektorsdd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic images at a size other than the model's, so every path resizes."""
    root = tmp_path_factory.mktemp("run")
    generate(root, 14, (150, 190), defect_rate=0.5, seed=21)
    return root / "images"


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", "-q", *args])
    return result.exit_code, result.output


def table(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("decoder", ["dali", "pil"])
def test_one_and_two_workers_give_the_same_table(
    images: Path, tmp_path: Path, decoder: str
) -> None:
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"{decoder}{workers}.parquet"
        code, output = run_cli(
            str(images),
            "--out",
            str(out),
            "--decoder",
            decoder,
            "--workers",
            str(workers),
            "--batch-size",
            "4",
        )
        assert code == 0, output
        outputs.append(table(out))
    assert_same_results(outputs[0], outputs[1])  # 2 threads against 1 per worker
    assert [row["path"] for row in outputs[0]] == [str(p) for p in sorted(images.glob("*.png"))]
    assert all(row["error"] is None for row in outputs[0])
    assert read_metadata(tmp_path / f"{decoder}1.parquet")["decoder"] == decoder


@pytest.mark.parametrize("decoder", ["dali", "pil"])
def test_batches_decoded_at_once_give_the_table_of_one_at_a_time(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoder: str
) -> None:
    """More decoding threads than a batch has files: several batches decode at once (DALI
    with a pipeline each); the rows and their order stay as one batch at a time."""
    assert [concurrent_batches(threads, 8) for threads in (2, 8, 9, 16, 64)] == [1, 1, 2, 2, 4]
    pool = make_decoder("dali", Preprocessing((32, 32)), 8, 16, torch.device("cpu"))
    assert isinstance(pool, DecoderPool) and [d.threads for d in pool.decoders] == [8, 8]
    outputs = []
    for at_once in (1, MAX_DECODING_BATCHES):
        monkeypatch.setattr(decode, "MAX_DECODING_BATCHES", at_once)
        out = tmp_path / f"{at_once}.parquet"
        args = ["--decoder", decoder, "--batch-size", "1", "--workers", "1"]
        code, output = run_cli(str(images), "--out", str(out), *args)
        assert code == 0, output
        outputs.append(table(out))
    assert outputs[0] == outputs[1]


def test_the_automatic_decoder_is_dali_on_a_gpu_and_pil_on_the_cpu(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, tiled = Preprocessing((32, 32)), Preprocessing((32, 32), tile_overlap=4)
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(decode, "dali_available", lambda: True)
    assert [decoder_name("auto", plain, device) for device in (cpu, gpu)] == ["pil", "dali"]
    assert decoder_name("auto", tiled, gpu) == "pil"  # DALI does not tile
    assert decoder_name("dali", plain, cpu) == "dali"  # asked for: DALI's CPU operators
    out = tmp_path / "r.parquet"  # DALI "installed", a CPU run: PIL
    code, output = run_cli(str(images), "--out", str(out), "--device", "cpu")
    assert code == 0, output
    assert read_metadata(out)["decoder"] == "pil"
    monkeypatch.setattr(decode, "dali_available", lambda: False)
    assert decoder_name("auto", plain, gpu) == "pil"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_dali_and_pil_preprocess_generated_images_alike(
    tmp_path: Path, channels: int, suffix: str
) -> None:
    """Both decoders follow the one ``Preprocessing``: identical when no resizing is needed,
    within rounding of the two resize kernels when shrinking or growing."""
    rng = np.random.default_rng(channels)
    files = []
    for index, (height, width) in enumerate([(300, 200), (90, 60), (120, 90)]):
        cells = rng.integers(0, 255, (height // 10, width // 10, channels))
        smooth = np.kron(cells, np.ones((10, 10, 1)))
        noisy = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
        files.append(tmp_path / f"{index}{suffix}")
        Image.fromarray(noisy.squeeze(2) if channels == 1 else noisy).save(files[-1])
    preprocessing = Preprocessing((120, 90), mean=(0.5,) * channels, std=(0.25,) * channels)
    dali = DaliDecoder(preprocessing, batch_size=4).decode(files)
    pil = PilDecoder(preprocessing).decode(files)
    assert dali.sizes == pil.sizes == [(300, 200), (90, 60), (120, 90)]
    assert dali.images.shape == pil.images.shape == (3, channels, 120, 90)
    assert dali.images.dtype == pil.images.dtype == torch.uint8  # one byte per pixel
    difference = (dali.images.int() - pil.images.int()).abs().numpy()  # in grey levels
    assert difference[2].max() == 0  # same size: nothing but decoding
    assert difference[:2].mean() < 0.4 and difference[:2].max() <= 8  # resize rounding


def test_dali_and_pil_preprocess_alike() -> None:
    """On real KolektorSDD JPEGs, where present: same tensors within a small tolerance."""
    files = sorted((SHARED / "kolektorsdd" / "kos02").glob("Part*.jpg"))[:3]
    if not files:
        pytest.skip("shared KolektorSDD not present")
    preprocessing = Preprocessing((352, 128), mean=(0.5,), std=(0.25,))
    dali = DaliDecoder(preprocessing, batch_size=4).decode(files)
    pil = PilDecoder(preprocessing).decode(files)
    assert dali.sizes == pil.sizes == [read_image(f, 1).shape[:2] for f in files]
    difference = (dali.images.int() - pil.images.int()).abs().numpy()  # in grey levels
    assert difference.mean() < 0.5 and difference.max() < 12


def test_gated_masks_are_empty_exactly_for_images_judged_defect_free(
    images: Path, tmp_path: Path
) -> None:
    every, gated = tmp_path / "all.parquet", tmp_path / "gated.parquet"
    # A threshold just above the least likely image that has defect pixels, so that one
    # is judged defect-free while the more likely ones stay defective.
    assert run_cli(str(images), "--out", str(every), "--decoder", "pil", "--masks", "all")[0] == 0
    masked = sorted(row["probability"] for row in table(every) if row["mask_area"])
    assert len(masked) >= 2 and masked[0] < masked[-1]
    threshold = repr(float(np.nextafter(np.float32(masked[0]), np.float32(1))))
    for out, masks in ((every, "all"), (gated, "gated")):
        out.unlink(missing_ok=True)
        args = ["--decoder", "pil", "--masks", masks, "--threshold", threshold]
        assert run_cli(str(images), "--out", str(out), *args)[0] == 0
    assert read_metadata(gated)["masks"] == "gated"
    rows_all, rows_gated = table(every), table(gated)
    assert {r["is_defect"] for r in rows_gated} == {True, False}
    for full, kept in zip(rows_all, rows_gated, strict=True):
        if kept["is_defect"]:
            assert kept == full
        else:
            assert kept["mask_area"] == 0 and kept["mask_bbox"] is None
            assert not rle.decode(kept["mask"]).any()
            assert kept["mask"]["size"] == full["mask"]["size"]
            assert {k: v for k, v in kept.items() if not k.startswith("mask")} == {
                k: v for k, v in full.items() if not k.startswith("mask")
            }
    pairs = zip(rows_all, rows_gated, strict=True)
    assert any(full["mask_area"] for full, kept in pairs if not kept["is_defect"])


def test_table_reads_back_and_masks_are_the_models(images: Path, tmp_path: Path) -> None:
    import duckdb

    out = tmp_path / "results.parquet"
    assert run_cli(str(images), "--out", str(out), "--decoder", "pil", "--masks", "all")[0] == 0
    ((count, mean),) = duckdb.sql(f"SELECT count(*), avg(probability) FROM '{out}'").fetchall()
    assert count == 14 and 0 <= mean <= 1
    metadata = read_metadata(out)
    assert metadata["schema_version"] == 4 and metadata["inputs"] == 14
    assert len(metadata["checkpoint_sha256"]) == 64 and metadata["finished_at"]
    assert metadata["masks"] == "all"
    # The stored RLE decodes (with pycocotools) to the mask the model gives for that image.
    engine = open_engine(EngineSpec(checkpoint=demo_model_path()), "cpu")
    thresholds = engine.manifest.thresholds
    preprocessing = engine.manifest.engine_preprocessing()
    rows = table(out)
    decoded = PilDecoder(preprocessing).decode([Path(r["path"]) for r in rows])
    network_input = normalize(decoded.images, preprocessing)
    probabilities, segmentation = (t.numpy() for t in engine.infer(network_input))
    for i, row in enumerate(rows):
        expected = result_row(
            i,
            Path(row["path"]),
            probabilities[i],
            segmentation[i],
            decoded.sizes[i],
            thresholds["classification"],
            thresholds["segmentation"],
        )
        stored = coco.decode(
            {"size": row["mask"]["size"], "counts": row["mask"]["counts"].encode()}
        )
        assert np.array_equal(stored.astype(bool), rle.decode(expected["mask"]))
        assert stored.shape == (150, 190) and row["mask_area"] == int(stored.sum())
        assert row["probability"] == pytest.approx(probabilities[i], abs=1e-6)
    assert any(row["mask_area"] > 0 for row in rows) and any(row["is_defect"] for row in rows)


def bad_folder(root: Path, images: Path) -> Path:
    folder = root / "mixed"
    folder.mkdir()
    good = sorted(images.glob("*.png"))[:4]
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    jpeg = folder / "source.jpg"
    Image.open(good[0]).save(jpeg, quality=90)
    (folder / "corrupt.jpg").write_bytes(jpeg.read_bytes()[:200])
    jpeg.unlink()
    (folder / "truncated.png").write_bytes(good[1].read_bytes()[:600])
    (folder / "zero.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image\n")
    return folder


@pytest.mark.parametrize("decoder", ["dali", "pil"])
def test_bad_files_get_error_rows_and_good_ones_results(
    images: Path, tmp_path: Path, decoder: str
) -> None:
    folder = bad_folder(tmp_path, images)
    out = tmp_path / "mixed.parquet"
    code, _ = run_cli(str(folder), "--out", str(out), "--decoder", decoder, "--batch-size", "8")
    assert code == 3  # some images failed
    rows = {Path(r["path"]).name: r for r in table(out)}
    assert len(rows) == 8
    errors = {name: row["error"] for name, row in rows.items() if row["error"]}
    assert set(errors) == {"corrupt.jpg", "truncated.png", "zero.png", "notes.png"}
    assert errors["zero.png"] == "empty file (0 bytes)"
    assert "not a readable image" in errors["notes.png"]
    assert all(row["probability"] is not None for n, row in rows.items() if n not in errors)
    assert (
        run_cli(
            str(folder),
            "--out",
            str(tmp_path / "again.parquet"),
            "--decoder",
            decoder,
            "--allow-errors",
        )[0]
        == 0
    )


def test_inputs_from_folders_globs_and_lists(images: Path, tmp_path: Path) -> None:
    names = sorted(images.glob("*.png"))
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two images\n{names[0]}\n\n{names[1].name}\n")
    (tmp_path / names[1].name).write_bytes(names[1].read_bytes())
    assert collect_inputs([str(images)]).paths == names
    assert collect_inputs([str(images / "*_0000[0-1].png")]).paths == names[:2]
    assert collect_inputs([], listing).paths == [names[0], tmp_path / names[1].name]
    assert collect_inputs([str(images), str(names[0])]).paths == names  # each once
    with pytest.raises(PsicbatchError, match="no such file or folder"):
        collect_inputs([str(tmp_path / "missing")])


def test_folder_scans_say_what_they_skipped(images: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("a.png", "b.webp"):
        Image.open(sorted(images.glob("*.png"))[0]).save(folder / name)
    (folder / "animation.gif").write_bytes(b"GIF89a")
    (folder / "notes.txt").write_text("x")
    (folder / "README").write_text("x")
    inputs = collect_inputs([str(folder)])
    assert [path.name for path in inputs.paths] == ["a.png", "b.webp"]
    assert inputs.skipped == {".gif": 1, ".txt": 1, "": 1}
    note = inputs.skipped_note()
    assert "skipped 3 files" in note and "1 .gif" in note and "(no extension)" in note
    out = tmp_path / "r.parquet"
    result = CliRunner().invoke(main, ["run", str(folder), "--out", str(out), "--decoder", "pil"])
    assert result.exit_code == 0, result.output
    assert "skipped 3 files in the input folders" in result.output


def test_dataset_masks_are_named_and_layout_takes_the_images_only(tmp_path: Path) -> None:
    ksdd, dagm = tmp_path / "ksdd", tmp_path / "dagm"
    make_kolektorsdd(ksdd)  # 4 images, each with a Part*_label.bmp
    make_dagm(dagm)  # 6 images; Label/ holds 2 masks (PNG) and Labels.txt
    plain = collect_inputs([str(ksdd), str(dagm)])
    assert len(plain.paths) == 16 and plain.mask_like == 6
    assert "6 input files look like a dataset's defect masks" in plain.mask_note()
    assert "--layout (kolektorsdd, kolektorsdd2, dagm, folder, classes) takes" in plain.mask_note()
    assert collect_inputs([str(ksdd / "kos01" / "Part0.jpg")]).mask_note() is None
    in_layout = collect_inputs([str(ksdd)], layout="kolektorsdd")
    assert [p.relative_to(ksdd).as_posix() for p in in_layout.paths] == [
        "kos01/Part0.jpg",
        "kos01/Part1.jpg",
        "kos02/Part0.jpg",
        "kos02/Part1.jpg",
    ]
    assert in_layout.mask_note() is None
    assert len(collect_inputs([str(dagm)], layout="dagm").paths) == 6
    # A resume must use the same layout: it is part of the job's sources.
    assert resolved_sources([str(ksdd)], None, "kolektorsdd") == [f"kolektorsdd:{ksdd.resolve()}"]
    assert resolved_sources([str(ksdd)], None, "auto") == [f"kolektorsdd:{ksdd.resolve()}"]
    assert collect_inputs([str(ksdd)], layout="auto").paths == in_layout.paths
    with pytest.raises(PsicbatchError, match="no images found in the 'kolektorsdd2' layout"):
        collect_inputs([str(ksdd)], layout="kolektorsdd2")

    out = tmp_path / "r.parquet"
    code, _ = run_cli(str(ksdd), "--out", str(out), "--decoder", "pil")
    assert code == 0 and len(table(out)) == 8
    result = CliRunner().invoke(
        main, ["run", str(ksdd), "--layout", "kolektorsdd", "-o", str(out), "--overwrite"]
    )
    assert result.exit_code == 0 and "look like a dataset's defect masks" not in result.output
    assert [Path(row["path"]).name for row in table(out)] == ["Part0.jpg", "Part1.jpg"] * 2
    result = CliRunner().invoke(main, ["run", str(ksdd), "-o", str(tmp_path / "n.parquet")])
    assert "4 input files look like a dataset's defect masks" in result.output
    assert "--layout kolektorsdd takes a dataset's images only" in result.output


def test_finding_no_images_names_where_it_looked_and_what_it_passed_over(
    tmp_path: Path,
) -> None:
    empty, gifs = tmp_path / "empty", tmp_path / "gifs"
    empty.mkdir()
    gifs.mkdir()
    (gifs / "a.gif").write_bytes(b"GIF89a")
    for sources, expected in (
        ([empty], f"no input images in {empty}: psicbatch reads .png, .jpg"),
        ([gifs], f"no input images in {gifs}: skipped 1 file in the input folders"),
    ):
        result = CliRunner().invoke(main, ["run", *map(str, sources), "-o", str(tmp_path / "r")])
        assert result.exit_code == 1 and result.output.startswith(f"Error: {expected}")
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_a_second_run_on_the_same_output_is_refused(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "locked.parquet"
    with OutputLock(out, "run"):
        code, output = run_cli(str(images), "--out", str(out))
    assert code == 1 and f"another psicbatch run (process {os.getpid()}) is writing" in output
    assert not out.exists()


def test_interrupted_run_is_refused_without_resume(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    (tmp_path / "r.parquet.parts").mkdir()
    (tmp_path / "r.parquet.parts" / "part-00000000.parquet").write_bytes(b"saved rows")
    code, output = run_cli(str(images), "--out", str(out))
    assert code == 1 and "--resume" in output


def test_resuming_a_finished_run_says_it_finished(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    assert run_cli(str(images), "--out", str(out))[0] == 0
    before = out.read_bytes()
    code, output = run_cli(str(images), "--out", str(out), "--resume")
    assert code == 1 and output.strip().splitlines() == [
        f"Error: {out}: holds an earlier psicbatch results file of a finished run (no "
        "r.parquet.parts to resume from); pass --overwrite to replace it, or choose another --out"
    ]
    assert out.read_bytes() == before


def test_killed_run_resumes_to_the_same_table(images: Path, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    generate(folder, 120, (96, 96), defect_rate=0.3, seed=5)
    reference = tmp_path / "reference.parquet"
    args = [
        str(folder / "images"),
        "--decoder",
        "pil",
        "--batch-size",
        "4",
        "--flush-every",
        "8",
        "-q",
    ]
    assert run_cli(*args, "--out", str(reference))[0] == 0
    out = tmp_path / "killed.parquet"
    parts = killed_run(args, out)
    done = len(pq.read_table(parts).column("path")) if parts.exists() else 0
    assert 0 < done < 120
    assert run_cli(*args, "--out", str(out), "--resume")[0] == 0
    assert table(out) == table(reference)
    assert not parts.exists() and not (tmp_path / "killed.parquet.lock").exists()
    assert json.dumps(read_metadata(out)["thresholds"]) == json.dumps(
        read_metadata(reference)["thresholds"]
    )


def test_ray_executor_gives_the_local_executors_rows(images: Path, tmp_path: Path) -> None:
    """And the local Ray the run started ends with the run: its processes would take
    about 5% of a core until this process ends. Ray's warning that it chose token
    authentication for it is not printed. The summary gives the actors' stage times
    and latencies, as for local workers (it gave none)."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra")
    folder = bad_folder(tmp_path, images)
    local, ray_out = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    args = [str(folder), "--decoder", "pil", "--batch-size", "3", "--allow-errors"]
    assert run_cli(*args, "--out", str(local))[0] == 0
    with pytest.MonkeyPatch.context() as patch:  # as a fresh shell has it
        patch.delenv("RAY_AUTH_MODE", raising=False)
        ray_run = ["run", *args, "--out", str(ray_out), "--executor", "ray"]
        result = CliRunner().invoke(main, ray_run, env={"COLUMNS": "200"})
    code, output = result.exit_code, result.output
    assert code == 0, output
    assert "Token authentication" not in output
    stages = re.search(
        r"stage time per image\s*│\s*decode\+preprocess [\d.]+ ms, inference", output
    )
    assert stages and re.search(r"latency per image .*│ p50 \d+ ms, p95", output), output
    assert_same_results(table(ray_out), table(local))
    assert read_metadata(ray_out)["thresholds"] == read_metadata(local)["thresholds"]
    assert not ray.is_initialized()


@pytest.mark.slow
def test_a_ray_actor_that_cannot_open_its_engine_says_so_in_one_line(
    images: Path, tmp_path: Path
) -> None:
    """As a cluster's node that cannot read the model at the driver's path: the run
    ended in a traceback of about 500 lines, Ray's wrapping of the actor's."""
    pytest.importorskip("ray", reason="Ray is an optional extra")
    model = tmp_path / "model.pt"
    shutil.copy(demo_model_path(), model)
    command = [CONSOLE, "run", images, "--out", tmp_path / "r.parquet", "--model", model]
    process = subprocess.Popen(
        [*command, "--executor", "ray", "--device", "cpu", "-q"], stderr=subprocess.PIPE
    )

    def ray_started() -> bool:
        return any(b"raylet" in command_line(pid) for pid in descendants(process.pid))

    try:
        wait_for(ray_started, process=process)
        model.unlink()  # read by the run already, not yet by its actor
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1
    said = f"Error: a Ray actor on {socket.gethostname()}: {model}: no such file"
    assert stderr.decode().strip().splitlines()[-1] == said


@pytest.mark.timeout(60, method="thread")  # Ray retries in native code, for minutes
def test_a_ray_cluster_address_nothing_answers_at_is_one_line_at_once(
    images: Path, tmp_path: Path
) -> None:
    """Ray retried it inside native code, where neither Ctrl-C nor SIGTERM stopped it."""
    pytest.importorskip("ray", reason="Ray is an optional extra")
    with socket.socket() as closed:  # a port that was free a moment ago: nothing listens
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    out = tmp_path / "r.parquet"
    code, output = run_cli(
        str(images), "--out", str(out), "--executor", "ray", "--address", address
    )
    said = f"Error: cannot connect to the Ray cluster at --address {address} (Connection refused)"
    assert (code, output.strip().splitlines()[-1]) == (1, said)
    assert not out.exists()


def test_both_decoders_refuse_gif_and_round_16_bit_alike(tmp_path: Path) -> None:
    every_value = np.arange(65536, dtype=np.uint32).astype(np.uint16).reshape(256, 256)
    Image.fromarray(every_value).save(tmp_path / "sixteen.png")
    Image.fromarray((every_value >> 8).astype(np.uint8)).save(tmp_path / "moving.gif")
    Image.fromarray((every_value >> 8).astype(np.uint8)).save(tmp_path / "w.webp", lossless=True)
    paths = [tmp_path / name for name in ("sixteen.png", "moving.gif", "w.webp")]
    grey_levels = Preprocessing(input_size=(256, 256), mean=(0.0,), std=(1 / 255,))
    decoded = [
        decoder.decode(paths) for decoder in (DaliDecoder(grey_levels, 4), PilDecoder(grey_levels))
    ]
    for batch in decoded:
        assert batch.positions == [0, 2]
        assert (
            batch.errors == {1: batch.errors[1]}
            and "unsupported image format (GIF)" in batch.errors[1]
        )
    dali, pil = (batch.images[0, 0].round().numpy() for batch in decoded)
    np.testing.assert_array_equal(dali, pil)  # every one of the 65536 values
    np.testing.assert_array_equal(pil, np.round(every_value / 257))


def _pages(path: Path, pages: list[np.ndarray], subfile_types: list[int]) -> None:
    """A TIFF of these pages, each with its NewSubfileType (1: a reduced-resolution copy, 4: a
    transparency mask)."""
    from PIL import TiffImagePlugin

    with path.open("w+b") as file, TiffImagePlugin.AppendingTiffWriter(file) as tiff:
        for page, kind in zip(pages, subfile_types, strict=True):
            Image.fromarray(page).save(tiff, format="TIFF", tiffinfo={254: kind})
            tiff.newFrame()


def _break_the_page_list(tiff: Path, broken: Path) -> None:
    """A copy of a one-page little-endian TIFF whose next-page offset points 3 bytes
    before its end: its first page decodes, what follows cannot be read."""
    data = bytearray(tiff.read_bytes())
    first_page = int.from_bytes(data[4:8], "little")
    tags = int.from_bytes(data[first_page : first_page + 2], "little")
    next_page = first_page + 2 + 12 * tags
    data[next_page : next_page + 4] = (len(data) - 3).to_bytes(4, "little")
    broken.write_bytes(bytes(data))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # psicbatch's own filter, which
# pytest replaces: checked in a process of the test's own below
def test_files_of_several_images_are_refused_by_every_reader_and_thumbnails_pass(
    tmp_path: Path,
) -> None:
    """Decoders read a file's first image alone: a defect on a TIFF's second page, or in
    an animation's later frame, would have gone uninspected under a result. A TIFF whose
    list of pages cannot be followed holds an unknown number: damaged, without PIL's
    warning on the console beside the error row."""
    from psicbatch.data.images import read_image

    first = (np.arange(48 * 64) % 251).astype(np.uint8).reshape(48, 64)
    frames = [Image.fromarray(first), Image.fromarray(255 - first)]
    _pages(tmp_path / "pages.tif", [first, 255 - first], [0, 0])
    _pages(tmp_path / "thumbnail.tif", [first, first[::4, ::4], first > 9], [0, 1, 4])  # + mask
    frames[0].save(tmp_path / "moving.webp", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "moving.png", save_all=True, append_images=frames[1:])
    Image.fromarray(first).save(tmp_path / "one.tif")
    _break_the_page_list(tmp_path / "one.tif", tmp_path / "broken.tif")
    names = ["pages.tif", "thumbnail.tif", "moving.webp", "moving.png", "one.tif", "broken.tif"]
    paths = [tmp_path / name for name in names]
    grey_levels = Preprocessing(input_size=(48, 64), mean=(0.0,), std=(1 / 255,))
    for decoder in (DaliDecoder(grey_levels, 4), PilDecoder(grey_levels)):
        batch = decoder.decode(paths)
        assert batch.positions == [1, 4]
        assert batch.errors == {
            0: "holds 2 images (TIFF pages); psicbatch inspects one image per "
            "file and would see only the first: save each as its own file",
            2: batch.errors[2],
            3: batch.errors[3],
            5: "damaged image (its list of pages is broken: TypeError: Missing dimensions)",
        }
        assert "holds 2 images (WEBP frames)" in batch.errors[2]
        assert "holds 2 images (PNG frames)" in batch.errors[3]
        np.testing.assert_array_equal(batch.images[0].numpy(), batch.images[1].numpy())
        np.testing.assert_array_equal(batch.images[0, 0].numpy(), first)
    with pytest.raises(PsicbatchError, match=r"pages\.tif: holds 2 images"):
        read_image(paths[0], 1)  # training's and evaluation's reader
    assert np.array_equal(read_image(paths[1], 1)[:, :, 0], first)
    # PIL warns of the broken list ("Corrupt EXIF data"); pytest shows every warning, so
    # the reader runs in a process of its own, where any warning not filtered is an error.
    probe = (
        "import sys\nfrom psicbatch.data.images import read_image\ntry:\n"
        f"    read_image(__import__('pathlib').Path({str(paths[5])!r}), 1)\n"
        "except Exception as error:\n    print(error)"
    )
    shown = subprocess.run(
        [sys.executable, "-W", "error", "-c", probe], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip().endswith(batch.errors[5]) and not shown.stderr


def test_the_progress_line_gives_a_slow_rate_to_two_figures() -> None:
    """A tiled run of line-scan images inspects an image every few seconds: "0.1 img/s"
    said little."""
    from psicbatch.commands.run import run_status
    from psicbatch.run.runner import RunSummary

    summary = RunSummary(images=3, defects=1)
    assert run_status(summary, 0.083) == "0.083 img/s  defects 1  errors 0"
    assert run_status(summary, 98.84) == "98.8 img/s  defects 1  errors 0"


def test_the_summary_gives_the_rate_after_start_up() -> None:
    from psicbatch.commands.run import _steady
    from psicbatch.run.runner import RunSummary

    # One batch after the first, of unreadable files, handed over at once: no rate.
    short = RunSummary(images=10, seconds=0.4, steady_images=2, steady_batches=1)
    short.steady_seconds = 0.0001
    assert _steady(short).startswith("no rate after start-up: fewer than 3 batches")
    summary = RunSummary(images=32, seconds=9.0, steady_images=24, steady_batches=3)
    summary.steady_seconds = 3.0
    assert _steady(summary) == "8.00 images/s after the first batch"


def dali_copy(decoder: DaliDecoder, files: list[Path]) -> torch.Tensor:
    """The decoder's pixels for ``files`` by DALI's own copy to host memory."""
    decoder.pipeline.feed_input("encoded", [np.fromfile(path, np.uint8) for path in files])
    (output,) = decoder.pipeline.run()
    host = output.as_cpu() if hasattr(output, "as_cpu") else output
    return torch.from_numpy(np.array(host.as_tensor()))


def test_dali_hands_its_own_buffers_over_and_they_outlive_later_batches(images: Path) -> None:
    """DALI's output reaches torch through DLPack, without a copy, equal to DALI's own
    copy, and a batch's pixels stay as decoded while the decoder goes on (DALI's
    executor does not reuse a buffer someone holds)."""
    files = sorted(images.glob("*.png"))
    decoder = DaliDecoder(Preprocessing((64, 48)), batch_size=4)
    first = decoder.decode(files[:4]).images
    assert first is not None
    kept = first.clone()
    for start in (4, 8):
        decoder.decode(files[start : start + 4])
    assert torch.equal(first, kept)
    assert torch.equal(dali_copy(decoder, files[:4]), kept)


def test_a_swallowed_stop_stops_a_run_at_its_next_batch(images: Path, tmp_path: Path) -> None:
    """The signal handler ignores further signals: a stop that the code it interrupted
    swallowed would leave a day's run deaf to Ctrl-C."""
    from psicbatch.run.runner import RunOptions, run
    from psicbatch.run.shutdown import Stopped, signals_stop

    main_thread_only()
    files = sorted(images.glob("*.png"))
    options = RunOptions(out=tmp_path / "r.parquet", batch_size=2, decoder="pil", devices=("cpu",))
    with signals_stop():
        with contextlib.suppress(Stopped):  # swallowed, as by a finalizer
            send_stop()
        with pytest.raises(Stopped):
            run(files, EngineSpec(checkpoint=demo_model_path()), options)
    assert not (tmp_path / "r.parquet").exists()


def test_a_workers_unexpected_error_is_one_line(
    images: Path, tmp_path: Path, engine_out_of_memory: str
) -> None:
    """Running out of GPU memory in the one local worker was a traceback (a worker
    process said one line); it is that line, with what needs less memory."""
    code, output = run_cli(str(images), "--out", str(tmp_path / "r.parquet"), "--device", "cpu")
    assert code == 1
    assert output.strip() == (
        f"Error: worker on cpu failed: OutOfMemoryError: {engine_out_of_memory}; "
        "a smaller --batch-size or fewer --workers need less memory"
    )


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (RuntimeError("shapes cannot be multiplied"), False),
        (MemoryError(), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"), True),
    ],
)
def test_a_workers_failure_says_what_needs_less_memory_where_memory_ran_out(
    error: BaseException, hint: bool
) -> None:
    from psicbatch.run.failures import worker_failure

    line = worker_failure("worker on cuda:1", error)
    assert line.startswith(f"worker on cuda:1 failed: {type(error).__name__}")
    assert line.endswith("fewer --workers need less memory") == hint


def test_an_engine_that_fails_to_open_is_one_line(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As CUDA does when it cannot start (a driver too old for the build): a traceback."""
    from psicbatch.run import worker

    def cannot_start(*args: object) -> None:
        raise RuntimeError("CUDA driver initialization failed, you might not have a CUDA gpu.")

    monkeypatch.setattr(worker, "open_engine", cannot_start)
    code, output = run_cli(str(images), "--out", str(tmp_path / "r.parquet"), "--device", "cpu")
    assert (code, output.strip()) == (
        1,
        "Error: worker on cpu failed: RuntimeError: CUDA driver initialization failed, you "
        "might not have a CUDA gpu.",
    )


def test_the_batch_is_chosen_for_the_device_and_input_size_unless_given(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 8 ran the paper's network 5-8% slower than batches of 1 on an AVX2
    CPU, and held each result for the whole batch: on a CPU a batch holds up to 512x512's
    pixels (at least 1, at most 8); on a GPU it stays 8."""
    from psicbatch.run.batch_choice import chosen_batch_size

    def chosen(size: tuple[int, int], device: str = "cpu") -> int:
        return chosen_batch_size(EngineSpec(null_outputs="clean", input_size=size), device)[0]

    assert [chosen(size) for size in ((1408, 512), (512, 512), (704, 256))] == [1, 1, 1]
    assert [chosen(size) for size in ((256, 256), (256, 128), (64, 64))] == [4, 8, 8]
    assert chosen((1408, 512), "cuda:0") == 8
    model = tmp_path / "m.pt"
    made = CliRunner().invoke(main, ["init", str(model), "--width", "0.125"])
    assert made.exit_code == 0, made.output
    assert chosen_batch_size(EngineSpec(checkpoint=model), "cpu") == (
        1,
        "512x512 inputs on a CPU: up to 512x512's pixels a batch",
    )
    from psicbatch import devices
    from psicbatch.summaries import checkpoint_summary

    monkeypatch.setattr(devices, "default_device", lambda: "cpu")  # as on a GPU server too
    said_here = "1 (auto: 512x512 inputs on a CPU: up to 512x512's pixels a batch)"
    assert checkpoint_summary(model)["run_batch_here"] == said_here  # psicbatch info
    options = ["--device", "cpu", "--decoder", "pil", "--precision", "fp32", "--model", str(model)]
    files = [str(path) for path in sorted(images.glob("*.png"))[:2]]
    for given, said in ((None, "1 (auto: 512x512 inputs on a CPU"), ("2", "2")):
        out = tmp_path / f"{given}.parquet"
        batch = [] if given is None else ["--batch-size", given]
        result = CliRunner().invoke(main, ["run", *files, "-o", str(out), *options, *batch])
        assert result.exit_code == 0, result.output
        row = next(line for line in result.output.splitlines() if "│ batch" in line)
        assert row.split("│")[2].strip().startswith(said), row
        assert read_metadata(out)["engine"]["max_batch"] == int(said[0])


def test_a_run_reads_and_hashes_its_checkpoint_once(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its manifest, input size and engine all come from the checkpoint: the weights are
    read for the engine alone (the rest maps them), and the file is hashed once."""
    from psicbatch import paths

    model = demo_model_path()
    paths._sha256_of.cache_clear()
    reads, hashes = [], []
    load, hashed_file = torch.load, paths.hashed_file

    def counted_load(path: object, *args: object, **kwargs: object) -> object:
        reads.append((Path(str(path)), kwargs.get("mmap")))
        return load(path, *args, **kwargs)

    def counted_hash(path: object, digest: object) -> object:
        hashes.append(Path(str(path)))
        return hashed_file(path, digest)

    monkeypatch.setattr(torch, "load", counted_load)
    monkeypatch.setattr(paths, "hashed_file", counted_hash)
    code, output = run_cli(str(images), "--model", str(model), "-o", str(tmp_path / "r.parquet"))
    assert code == 0, output
    assert [path for path, mapped in reads if not mapped] == [model]
    assert hashes.count(model) == 1
