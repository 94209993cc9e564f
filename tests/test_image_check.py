"""A dataset's images are opened as far as their headers before training or scoring
decodes any: every file they could not use is known in seconds, and listed by ``info
DATA``."""

from __future__ import annotations

import builtins
import errno
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from psicbatch.assets import demo_model_path
from psicbatch.cli import main
from psicbatch.data import images, labelled, memory
from psicbatch.data.synth import generate
from tests.stalls import StallReads

TINY = ["--width", "0.125", "--input-size", "48x48", "--seg-epochs", "1", "--cls-epochs", "1"]


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """Eight synthetic images, three of which no reader can use, and a defective one's mask
    drawn on a smaller copy of it."""
    data = tmp_path / "data"
    generate(data, 8, (48, 48), defect_rate=0.5, seed=1)
    images = sorted((data / "images").glob("*.png"))
    images[1].write_bytes(b"not an image")
    images[4].write_bytes(b"")
    frames = [Image.new("L", (48, 48), 20), Image.new("L", (48, 48), 200)]
    frames[0].save(images[6], save_all=True, append_images=frames[1:])
    mask = sorted((data / "masks").glob("*.png"))[1]  # synth_00002's
    Image.open(mask).resize((24, 32)).save(mask)
    return data


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training that loads an image, or scoring that decodes one, fails the test: the
    refusal must come before. (The readers inside ``memory`` and ``labelled`` are
    replaced, not functions other modules import by name: one imported while it was
    replaced would keep the replacement.)"""

    def loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(memory, "read_resized", loading)
    monkeypatch.setattr(labelled, "read_image", loading)


@pytest.mark.parametrize("command", ["train", "cv"])
def test_training_names_the_first_unusable_image_and_counts_the_rest_before_loading(
    damaged: Path, tmp_path: Path, no_loading: None, command: str
) -> None:
    """It stopped at the first, minutes into loading, and at the next once that was mended."""
    result = CliRunner().invoke(main, [command, str(damaged), "-o", str(tmp_path / "m"), *TINY])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"Error: {damaged}/images/synth_00001.png: not a readable image (unknown or damaged "
        f"format) (and 3 more images that cannot be used; psicbatch info {damaged} lists them)"
    )


def test_info_lists_every_unusable_image_and_shows_the_rest(damaged: Path) -> None:
    result = CliRunner().invoke(main, ["info", str(damaged), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["images"] == 8
    assert summary["input size (auto)"].startswith("48x48")  # of the images that can be read
    folder = damaged / "images"
    mask = damaged / "masks" / "synth_00002.png"
    assert summary["images that cannot be used"] == [
        f"{folder}/synth_00001.png: not a readable image (unknown or damaged format)",
        f"{mask}: mask is 24x32 (width x height) but its image {folder / mask.name} is "
        "48x48; masks must have their image's size",
        f"{folder}/synth_00004.png: empty file (0 bytes)",
        f"{folder}/synth_00006.png: holds 2 images (PNG frames); psicbatch inspects one image "
        "per file and would see only the first: save each as its own file",
    ]
    generate(damaged, 8, (48, 48), defect_rate=0.5, seed=1)  # mended
    mended = json.loads(CliRunner().invoke(main, ["info", str(damaged), "--json"]).output)
    assert "images that cannot be used" not in mended


def test_held_out_images_are_opened_before_training_too(
    damaged: Path, tmp_path: Path, no_loading: None
) -> None:
    clean = tmp_path / "clean"
    generate(clean, 6, (48, 48), defect_rate=0.5, seed=2)

    arguments = ["train", str(clean), "--validation", str(damaged), "-o", str(tmp_path / "m")]
    result = CliRunner().invoke(main, [*arguments, *TINY])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {damaged}/images/synth_00001.png: not a readable")
    assert result.output.strip().endswith(f"psicbatch info {damaged} lists them)")


def test_info_counts_pixel_depths_and_lists_8_bit_images_a_16_bit_training_refuses(
    tmp_path: Path, no_loading: None
) -> None:
    data = tmp_path / "deep"
    generate(data, 4, (48, 48), defect_rate=0.5, seed=3)
    images = sorted((data / "images").glob("*.png"))
    for image in images[:3]:  # the camera's 16-bit files; the last one saved at 8 bits
        Image.fromarray(np.asarray(Image.open(image)).astype(np.uint16) * 257).save(image)
    summary = json.loads(CliRunner().invoke(main, ["info", str(data), "--json"]).output)
    assert summary["pixel depth"] == (
        "16-bit: 3, 8-bit: 1 (train --bit-depth auto reads 16 bits, the first image's, and "
        "refuses the 8-bit images: listed below)"
    )
    said = f"{images[3]}: an 8-bit image, but the model reads 16-bit grayscale"
    assert [line[: len(said)] for line in summary["images that cannot be used"]] == [said]
    result = CliRunner().invoke(main, ["train", str(data), "-o", str(tmp_path / "m"), *TINY])
    assert result.exit_code == 1 and result.output.startswith(f"Error: {said}")
    first, last = (np.asarray(Image.open(image)) for image in (images[0], images[3]))
    Image.fromarray((first // 257).astype(np.uint8)).save(images[0])  # auto: 8 bits now
    Image.fromarray(last.astype(np.uint16) * 257).save(images[3])
    summary = json.loads(CliRunner().invoke(main, ["info", str(data), "--json"]).output)
    assert summary["pixel depth"] == "16-bit: 3, 8-bit: 1"
    assert "images that cannot be used" not in summary


def test_an_image_that_may_not_be_read_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It read 'damaged image ([Errno 13] Permission denied: ...)'."""
    data = tmp_path / "data"
    generate(data, 4, (48, 48), defect_rate=0.5, seed=3)
    locked = sorted((data / "images").glob("*.png"))[2]
    if os.geteuid() == 0:  # root reads any file: the refusal as the system gives it
        real_open = builtins.open

        def refusing(file: Any, *args: Any, **kwargs: Any) -> Any:
            if str(file) == str(locked):
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing)
    else:
        locked.chmod(0)
    summary = json.loads(CliRunner().invoke(main, ["info", str(data), "--json"]).output)
    assert summary["images that cannot be used"] == [f"{locked}: permission denied"]


@pytest.mark.parametrize("command", ["eval", "calibrate"])
def test_scoring_names_the_first_unusable_image_before_any_is_scored(
    damaged: Path, tmp_path: Path, no_loading: None, command: str
) -> None:
    from psicbatch.assets import demo_model_path

    model = str(demo_model_path())
    arguments = {
        "eval": [model, str(damaged)],
        "calibrate": [str(damaged), "--model", model],
    }[command]
    result = CliRunner().invoke(main, [command, *arguments, "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().endswith(
        f"(and 3 more images that cannot be used; psicbatch info {damaged} lists them)"
    )
    assert not (tmp_path / "out").exists()


Stall = Callable[[list[Path], bool], list[Path]]


@pytest.fixture
def stall(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stall]:
    """``stall(files, headers)``: opening those files (also as far as their headers, or
    only to decode them) waits as a read on a share that stopped answering does, until the
    test ends; reading from a path is given 0.5 s. It returns the list of the stalled
    files' openings, in order, as they happen."""
    released = threading.Event()
    real_opened = images._opened
    monkeypatch.setattr(images, "READ_SECONDS", 0.5)

    def stalling(files: list[Path], headers: bool) -> list[Path]:
        stalled: list[Path] = []

        def opened(path: Path, data: bytes | None, lazy: bool) -> Any:
            if path in files and (headers or not lazy):
                stalled.append(path)
                released.wait(30)
            return real_opened(path, data, lazy)

        monkeypatch.setattr(images, "_opened", opened)
        return stalled

    yield stalling
    released.set()


def _scoring_arguments(command: str, data: Path, out: Path) -> list[str]:
    from psicbatch.assets import demo_model_path

    model = str(demo_model_path())
    return {
        "train": ["train", str(data), "-o", str(out), *TINY],
        "eval": ["eval", model, str(data), "-o", str(out), "-q"],
        "calibrate": ["calibrate", str(data), "--model", model, "-o", str(out), "-q"],
    }[command]


@pytest.mark.parametrize("command", ["train", "eval", "calibrate", "info"])
def test_a_dataset_on_a_share_that_stopped_answering_ends_in_one_line_at_its_first_file(
    tmp_path: Path, stall: Stall, command: str
) -> None:
    """Each stalled file waited for ever: the job hung without a word. Now the first is
    named after the time limit, and the files beside it, which would stall as long, are
    not tried one after another."""
    data = tmp_path / "data"
    generate(data, 6, (48, 48), defect_rate=0.5, seed=4)
    files = sorted((data / "images").glob("*.png"))
    stalled = stall(files, True)
    if command == "info":
        arguments = ["info", str(data)]
    else:
        arguments = _scoring_arguments(command, data, tmp_path / "out")
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"Error: {files[0]}: took longer than 0.5 s to read (a network share that stopped "
        "answering? set PSICBATCH_READ_TIMEOUT to wait longer)"
    )
    assert stalled == [files[0]]


@pytest.mark.parametrize("command", ["train", "eval", "calibrate"])
def test_a_file_whose_decoding_stalls_ends_loading_and_scoring_in_one_line(
    tmp_path: Path, stall: Stall, command: str
) -> None:
    """Its header read, its pixels stall: training's loading and scoring's reading
    threads waited for ever."""
    data = tmp_path / "data"
    generate(data, 6, (48, 48), defect_rate=0.5, seed=4)
    stalled_file = sorted((data / "images").glob("*.png"))[3]
    stalled = stall([stalled_file], False)
    result = CliRunner().invoke(main, _scoring_arguments(command, data, tmp_path / "out"))
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {stalled_file}: took longer than 0.5 s to read (a network share that "
        "stopped answering? set PSICBATCH_READ_TIMEOUT to wait longer)"
    )
    assert stalled == [stalled_file]


@pytest.mark.parametrize("command", ["eval", "calibrate"])
def test_a_page_whose_picture_stalls_leaves_out_the_pictures_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """The share stopped answering once the images were scored: each of the page's
    pictures (dozens) would have waited its whole limit."""
    from psicbatch import calibration_report, evaluation_page

    data = tmp_path / "data"
    generate(data, 6, (48, 48), defect_rate=0.5, seed=4)
    tried: list[Path] = []

    def stalled(path: Path, *args: object) -> None:
        tried.append(path)
        raise images.ReadStalled(path, "took longer than 60 s to read")

    module = {"eval": evaluation_page, "calibrate": calibration_report}[command]
    monkeypatch.setattr(module, "read_image", stalled)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, _scoring_arguments(command, data, out))
    assert result.exit_code == 0, result.output
    page = (out / "report.html" if command == "eval" else out.with_suffix(".html")).read_text()
    assert page.count("(image not readable here)") > 1
    assert len(tried) == 1


def test_a_slow_share_is_given_longer_in_the_environment_and_a_bad_limit_is_one_line(
    tmp_path: Path,
) -> None:
    """PSICBATCH_READ_TIMEOUT moves the limit (line-scan files over a thin link take
    longer than a minute); a value that is not a positive number is refused before any
    command runs."""
    import subprocess
    import sys

    said = "from psicbatch.data import images; print(images.READ_SECONDS)"
    for value, limit in (("", "60.0"), ("300", "300.0"), (" 0.5 ", "0.5")):
        environment = {**os.environ, "PSICBATCH_READ_TIMEOUT": value}
        finished = subprocess.run(
            [sys.executable, "-c", said], env=environment, capture_output=True, text=True
        )
        assert finished.stdout.strip() == limit, finished.stderr
    data = tmp_path / "data"
    generate(data, 2, (48, 48), defect_rate=0.5, seed=4)
    for value in ("0", "soon", "inf", "-5"):
        result = CliRunner().invoke(
            main, ["info", str(data)], env={"PSICBATCH_READ_TIMEOUT": value}
        )
        assert result.exit_code == 1, result.output
        assert result.output.strip() == (
            f"Error: PSICBATCH_READ_TIMEOUT={value}: not a positive number of seconds"
        )


def test_a_tiled_training_whose_header_read_stalls_ends_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stall_reads: StallReads
) -> None:
    """A tiled training reads each whole file for its grid of tiles before cutting any
    (``run.headers.image_size``); that read waited for ever on a share that stopped
    answering."""
    from psicbatch.run import headers

    data = tmp_path / "data"
    generate(data, 4, (96, 96), defect_rate=0.5, seed=4)
    stalled = sorted((data / "images").glob("*.png"))[2]
    stall_reads(headers, "read_file", stalled)
    monkeypatch.setattr(images, "READ_SECONDS", 0.5)
    arguments = ["train", str(data), "-o", str(tmp_path / "m.pt"), "--tile", "64x64", *TINY[:2]]
    result = CliRunner().invoke(main, [*arguments, *TINY[4:], "-q"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {stalled}: took longer than 0.5 s to read (a network share that stopped "
        "answering? set PSICBATCH_READ_TIMEOUT to wait longer)"
    )


def test_digests_of_files_on_a_share_that_stopped_answering_end_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stall_reads: StallReads
) -> None:
    """Training, cv, calibrate and info know images by their files' digests, read by a
    pool of threads: a stalled read held the pool, and the command, for ever."""
    from psicbatch import fingerprints

    data = tmp_path / "data"
    generate(data, 4, (48, 48), defect_rate=0.5, seed=4)
    files = sorted((data / "images").glob("*.png"))
    stall_reads(fingerprints, "hashed_file", files[1])
    monkeypatch.setattr(images, "READ_SECONDS", 0.5)
    assert len(fingerprints.file_digests(files[2:])) == 2
    with pytest.raises(images.ReadStalled, match=r"synth_00001\.png: took longer than 0\.5 s"):
        fingerprints.file_digests(files)


def test_a_small_input_file_on_a_share_that_stopped_answering_ends_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stall_reads: StallReads
) -> None:
    """A run's --list (as a decision file, a region, DAGM's Labels.txt: small files read
    whole) waited for ever on such a share."""
    from psicbatch import paths

    listing = tmp_path / "list.txt"
    listing.write_text("a.png\n")
    stall_reads(paths, "_regular_file_bytes", listing)
    monkeypatch.setenv("PSICBATCH_READ_TIMEOUT", "0.5")
    arguments = ["run", "--list", str(listing), "--out", str(tmp_path / "r.parquet")]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"Error: {listing}: cannot read the list (took longer than 0.5 s to read (a network "
        "share that stopped answering? set PSICBATCH_READ_TIMEOUT to wait longer))"
    )
    assert not (tmp_path / "r.parquet").exists()


def _unanswered(path: Path) -> str:
    return (
        f"Error: {path}: did not answer within 0.5 s (a network share that stopped "
        "answering? set PSICBATCH_READ_TIMEOUT to wait longer)"
    )


@pytest.mark.parametrize("command", ["run", "watch", "train", "info", "eval"])
def test_a_share_gone_before_the_command_starts_ends_it_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stall_reads: StallReads, command: str
) -> None:
    """The first look at a folder the command line names (click's check of a path, the
    run's look at its sources) waited for ever, before the command had said a word."""
    data = tmp_path / "share"
    generate(data, 2, (48, 48), defect_rate=0.5, seed=4)
    stall_reads(os, "stat", data)
    monkeypatch.setenv("PSICBATCH_READ_TIMEOUT", "0.5")
    out = tmp_path / "out"
    model = str(demo_model_path())
    arguments = {
        "run": ["run", str(data), "--out", f"{out}.parquet"],
        "watch": ["run", "--watch", str(data), "--out", str(out)],
        "train": ["train", str(data), "-o", str(out), *TINY],
        "info": ["info", str(data)],
        "eval": ["eval", model, str(data), "-o", str(out)],
    }[command]
    result = CliRunner().invoke(main, arguments)
    assert (result.exit_code, result.output.strip()) == (1, _unanswered(data))
    assert not out.exists() and not Path(f"{out}.parquet").exists()


@pytest.mark.parametrize("command", ["run", "train"])
def test_a_folder_whose_listing_stalls_ends_the_search_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stall_reads: StallReads, command: str
) -> None:
    """A share that stops answering while its folders are searched held the listing for
    ever."""
    data = tmp_path / "data"
    generate(data, 4, (48, 48), defect_rate=0.5, seed=4)
    stalled = data / "images"  # a subfolder for the run, the dataset's own for training
    stall_reads(os, "scandir", stalled)
    monkeypatch.setenv("PSICBATCH_READ_TIMEOUT", "0.5")
    out = tmp_path / "out"
    arguments = {
        "run": ["run", str(data), "--out", str(out)],
        "train": ["train", str(data), "-o", str(out), *TINY],
    }[command]
    result = CliRunner().invoke(main, arguments)
    assert (result.exit_code, result.output.strip()) == (1, _unanswered(stalled))
