"""Inputs that are not plain image files, engine folders that point outside themselves,
files changed between a kill and --resume, and files that take too long to decode.

Runs that could hang go through a subprocess with a timeout (or a bounded in-process
call), so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from psicbatch.assets import demo_model_path
from psicbatch.cli import main
from psicbatch.engines.build import BuildOptions, build_engine
from psicbatch.engines.loading import load_engine
from psicbatch.engines.manifest import MANIFEST_NAME
from psicbatch.engines.spec import EngineSpec
from psicbatch.errors import PsicbatchError
from psicbatch.paths import file_sha256
from psicbatch.preprocess import Preprocessing
from psicbatch.run.batch_budget import SLACK, BatchBudget
from psicbatch.run.files import FileLimits
from psicbatch.run.inputs import collect_inputs
from psicbatch.run.job import resolved_sources
from psicbatch.run.output import read_metadata
from psicbatch.run.runner import RunOptions, run
from tests.run_processes import CONSOLE, killed_run
from tests.stalls import StallReads

PER_RUN_SECONDS = 120


def image(path: Path, seed: int, size: tuple[int, int] = (64, 80)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    folder = tmp_path / "share"
    folder.mkdir()
    image(folder / "a_good.png", 1)
    image(folder / "z_good.png", 2)
    os.mkfifo(folder / "fifo.png")
    os.symlink("/dev/zero", folder / "zero.png")
    image(folder / "big.png", 3, (400, 400))  # ~160 kB, over the limit given below
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(folder / "socket.png"))
    except OSError:  # platforms or file systems without Unix sockets
        pass
    finally:
        listener.close()
    return folder


@pytest.mark.parametrize("decoder", ["dali", "pil"])
def test_special_files_and_oversized_files_get_error_rows(
    hostile: Path, tmp_path: Path, decoder: str
) -> None:
    if decoder == "dali":
        pytest.importorskip("nvidia.dali")
    out = tmp_path / "results.parquet"
    began = time.monotonic()
    finished = subprocess.run(
        [
            CONSOLE,
            "run",
            hostile,
            "--out",
            out,
            "-q",
            "--decoder",
            decoder,
            "--max-file-size",
            "0.1",
            "--allow-errors",
        ],
        capture_output=True,
        timeout=PER_RUN_SECONDS,
    )
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]
    assert time.monotonic() - began < PER_RUN_SECONDS
    rows = {Path(r["path"]).name: r for r in pq.read_table(out).to_pylist()}
    assert rows["fifo.png"]["error"] == "not a regular file (named pipe)"
    assert rows["zero.png"]["error"] == "not a regular file (character device)"
    assert "above the 0.1 MiB limit (--max-file-size)" in rows["big.png"]["error"]
    if (hostile / "socket.png").exists():
        assert rows["socket.png"]["error"] == "not a regular file (socket)"
    assert rows["a_good.png"]["error"] is None and rows["z_good.png"]["error"] is None


def test_listing_takes_special_files_without_opening_them(hostile: Path) -> None:
    names = {path.name for path in collect_inputs([str(hostile)]).paths}
    assert {"fifo.png", "zero.png", "a_good.png"} <= names


@pytest.fixture(scope="module")
def torch_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("engine")
    options = BuildOptions(backend="torch", precision="fp32", max_batch=2, out=folder / "e")
    return build_engine(demo_model_path(), options)[0]


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_engine_file_outside_its_folder_is_refused(
    torch_engine: Path, tmp_path: Path, where: str
) -> None:
    folder = tmp_path / "folder" / "engine"
    shutil.copytree(torch_engine, folder)
    outside = tmp_path / "folder" / "elsewhere.pt"
    shutil.copyfile(torch_engine / "model.pt", outside)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["engine_file"] = str(outside) if where == "absolute" else "../elsewhere.pt"
    manifest["engine_sha256"] = file_sha256(outside)  # the hash matches: only the place is wrong
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(PsicbatchError, match="points outside its engine folder"):
        load_engine(folder, "cpu")


def external_data_model(path: Path, location: str) -> None:
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=location)
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [weight],
    )
    onnx.save(helper.make_model(graph), str(path))


def test_onnx_external_data_outside_the_folder_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from psicbatch.engines.ort_engine import check_external_data

    folder = tmp_path / "engine"
    folder.mkdir()
    external_data_model(folder / "inside.onnx", "weights.bin")
    check_external_data(folder / "inside.onnx", {"weights.bin": "digest"})  # accepted
    for location in ("../weights.bin", str(tmp_path / "weights.bin")):
        external_data_model(folder / "outside.onnx", location)
        with pytest.raises(PsicbatchError, match="points outside its engine folder"):
            check_external_data(folder / "outside.onnx", {location: "digest"})


def test_files_changed_between_a_kill_and_resume_are_recomputed(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    files = [image(folder / f"{i:02d}.png", i) for i in range(60)]
    out = tmp_path / "results.parquet"
    args = ["--decoder", "pil", "--batch-size", "4", "--flush-every", "4", "-q"]
    parts = killed_run([folder, *args], out, seconds=PER_RUN_SECONDS)
    done = pq.read_table(parts).column("path").to_pylist()
    assert str(files[0]) in done and str(files[1]) in done
    image(files[0], 100)  # replaced by another image
    os.utime(files[0], ns=(time.time_ns(), time.time_ns() + 10**9))  # and surely newer
    files[1].unlink()  # gone
    options = RunOptions(
        out=out,
        batch_size=4,
        resume=True,
        decoder="pil",
        devices=("cpu",),
        sources=tuple(resolved_sources([str(folder)], None)),
    )
    summary = run(files, EngineSpec(checkpoint=demo_model_path()), options)
    assert summary.recomputed == 2 and summary.skipped == len(done) - 2
    table = pq.read_table(out).to_pylist()
    assert [row["path"] for row in table] == [str(f) for f in files]  # still in input order
    rows = {Path(r["path"]).name: r for r in table}
    assert len(rows) == 60 and rows["01.png"]["error"] == "no such file"
    resumed = read_metadata(out)["resumed"]
    assert resumed == {"kept": len(done) - 2, "recomputed": 2, "dropped": 0}
    fresh = tmp_path / "fresh.parquet"
    assert (
        CliRunner().invoke(main, ["run", str(files[0]), "--out", str(fresh), *args]).exit_code == 0
    )
    assert {k: v for k, v in rows["00.png"].items()} == pq.read_table(fresh).to_pylist()[0]


@pytest.mark.parametrize("decoder", ["dali", "pil"])
def test_a_file_that_decodes_too_long_gets_an_error_row(
    tmp_path: Path, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if decoder == "dali":
        pytest.importorskip("nvidia.dali")
    import psicbatch.run.decode as decode

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(11):
        image(folder / f"{index:02}.png", index)
    slow = image(folder / "slow.png", 99).read_bytes()
    if decoder == "pil":
        real = decode.read_image

        def stall(path: Path, *args: Any) -> np.ndarray:
            if path.name == "slow.png":
                time.sleep(30)
            return real(path, *args)

        monkeypatch.setattr(decode, "read_image", stall)
    else:
        real_run = decode.DaliDecoder._run

        def stall(self: object, arrays: list) -> object:
            if any(array.tobytes() == slow for array in arrays):
                time.sleep(30)
            return real_run(self, arrays)

        monkeypatch.setattr(decode.DaliDecoder, "_run", stall)
    out = tmp_path / "results.parquet"
    began = time.monotonic()
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(folder),
            "--out",
            str(out),
            "-q",
            "--decoder",
            decoder,
            "--decode-timeout",
            "1",
            "--batch-size",
            "12",  # one batch: the timeout once per file would outlast --batch-timeout
            "--batch-timeout",
            "8",
        ],
    )
    assert result.exit_code == 3, result.output
    assert time.monotonic() - began < 25
    rows = {Path(r["path"]).name: r for r in pq.read_table(out).to_pylist()}
    assert rows["slow.png"]["error"] == "decoding took longer than 1 s (--decode-timeout)"
    assert all(rows[f"{i:02}.png"]["error"] is None for i in range(11))


def test_a_batch_budget_is_one_limit_and_the_pace_seen_for_the_rest() -> None:
    budget = BatchBudget(file_seconds=60)
    assert budget.seconds(8) == 120  # the limit for the slowest file, and once for the rest
    assert budget.seconds(1) == 60
    budget.record(0.8, 8)  # 0.1 s per file
    assert budget.seconds(8) == pytest.approx(60 + SLACK * 8 * 0.1)
    assert budget.seconds(1) == 60  # one file: its limit
    budget.record(0.4, 8)  # a faster batch does not lower it
    assert budget.seconds(8) == pytest.approx(60 + SLACK * 8 * 0.1)
    budget.record(80, 8)  # 10 s per file
    assert budget.seconds(8) == 60 + SLACK * 8 * 10
    budget.record(240, 8)  # 30 s per file
    assert budget.seconds(8) == 480  # never more than the limit once per file


def test_dali_gives_a_stalled_file_about_two_timeouts_once_batches_were_timed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled file's batch gets one timeout and the pace of the batches before, not one
    timeout per file; then its files are decoded alone, each within the timeout."""
    pytest.importorskip("nvidia.dali")
    import psicbatch.run.decode as decode

    files = [image(tmp_path / f"{index}.png", index, (16, 16)) for index in range(8)]
    slow = files[6].read_bytes()

    def quick_or_stalled(self: object, arrays: list[np.ndarray]) -> torch.Tensor:
        if any(array.tobytes() == slow for array in arrays):
            time.sleep(30)
        return torch.zeros((len(arrays), 1, 16, 16), dtype=torch.uint8)

    budgets: list[float] = []
    real_call_limited = decode.call_limited

    def recorded(call: Any, seconds: float) -> Any:
        budgets.append(seconds)
        return real_call_limited(call, seconds)

    monkeypatch.setattr(decode.DaliDecoder, "_run", quick_or_stalled)
    monkeypatch.setattr(decode, "call_limited", recorded)
    decoder = decode.DaliDecoder(Preprocessing((16, 16)), 4, limits=FileLimits(decode_seconds=1))
    first, second = decoder.decode(files[:4]), decoder.decode(files[4:])
    assert first.positions == [0, 1, 2, 3] and first.errors == {}
    assert second.positions == [0, 1, 3]
    assert second.errors == {2: "decoding took longer than 1 s (--decode-timeout)"}
    # Each batch is read, then decoded, within its budget.
    assert budgets[:2] == [2, 2]  # nothing timed yet: the timeout twice
    assert 1 < budgets[2] == budgets[3] < 2  # one timeout, four files at the first one's pace
    assert budgets[4:] == [1, 1, 1, 1]  # then each file alone


@pytest.mark.parametrize("decoder", ["dali", "pil"])
def test_a_file_whose_reading_stalls_gets_an_error_and_its_batch_goes_on(
    tmp_path: Path, decoder: str, stall_reads: StallReads
) -> None:
    """As on a network share that stops answering for one file: its read is abandoned at
    --decode-timeout, as a decoding would be."""
    if decoder == "dali":
        pytest.importorskip("nvidia.dali")
    import psicbatch.run.decode as decode

    files = [image(tmp_path / f"{index}.png", index, (16, 16)) for index in range(4)]
    stall_reads(decode, "read_bytes", files[1])
    limits, preprocessing = FileLimits(decode_seconds=0.5), Preprocessing((16, 16))
    chosen = (
        decode.DaliDecoder(preprocessing, 4, limits=limits)
        if decoder == "dali"
        else decode.PilDecoder(preprocessing, limits=limits)
    )
    began = time.monotonic()
    batch = chosen.decode(files)
    assert time.monotonic() - began < 20  # not the wait of the stalled read
    assert batch.positions == [0, 2, 3]
    assert batch.errors == {1: "decoding took longer than 0.5 s (--decode-timeout)"}
    assert set(batch.stamps) == {0, 1, 2, 3}  # which version of each file it was


def test_a_report_thumbnail_whose_reading_stalls_is_left_out_and_so_are_those_after_it(
    tmp_path: Path, stall_reads: StallReads
) -> None:
    """The files after it sit on the same share: each would wait its whole limit."""
    from psicbatch.pictures import PictureReader
    from psicbatch.run import html_report, rle

    good, stalled = (image(tmp_path / f"{name}.png", 0, (16, 16)) for name in ("good", "stalled"))
    stall_reads(html_report, "read_bytes", stalled)
    limits = FileLimits(decode_seconds=0.5)
    mask = rle.empty((16, 16))
    reader = PictureReader()
    good_row, stalled_row = ({"path": str(file), "mask": mask} for file in (good, stalled))
    assert html_report.thumbnail(good_row, limits, reader) is not None
    began = time.monotonic()
    assert html_report.thumbnail(stalled_row, limits, reader) is None
    assert time.monotonic() - began < 20  # not the wait of the stalled read
    assert html_report.thumbnail(good_row, limits, reader) is None
    assert html_report.thumbnail(good_row, limits, PictureReader()) is not None
