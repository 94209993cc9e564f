"""Folders are searched through links to folders, each folder once; a folder that cannot
be read is named."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from psicbatch.cli import main
from psicbatch.data.images import image_files
from psicbatch.data.layouts import read_dataset
from psicbatch.data.synth import generate
from psicbatch.folder_walk import files_below
from psicbatch.run.folder_scan import FolderScan
from tests.refusals import refuse_listing


def test_linked_folders_are_searched_once_each_and_loops_are_not_followed(
    tmp_path: Path,
) -> None:
    inputs, camera = tmp_path / "inputs", tmp_path / "mnt" / "line3"
    (inputs / "day1").mkdir(parents=True)
    camera.mkdir(parents=True)
    for path in (inputs / "a.png", inputs / "day1" / "b.png", camera / "c.png"):
        path.write_bytes(b"")
    (inputs / "line3").symlink_to(camera)  # a camera folder linked in
    (inputs / "line3-again").symlink_to(camera)  # the same folder under a second name
    (inputs / "day1" / "up").symlink_to("..")  # a loop, if followed
    (inputs / "gone").symlink_to(tmp_path / "nowhere")  # a dangling link: a file, as given
    (inputs / "a-day1").symlink_to(inputs / "day1")  # first in name order, but a link
    found = [path.relative_to(inputs).as_posix() for path in files_below(inputs)]
    # Folders before links, links in name order: the paths a watch gives the same files.
    assert found == ["a.png", "gone", "day1/b.png", "line3/c.png"]
    scan = FolderScan(inputs, tmp_path / "out", set())
    images = sorted(inputs / path for path in found if path.endswith(".png"))
    assert sorted(scan.pending(now=0.0)) == images


def test_a_run_and_a_dataset_read_images_in_linked_folders(tmp_path: Path) -> None:
    """A run said 'no input images' for a folder of linked camera folders."""
    generate(tmp_path / "cam1", 3, (48, 48), defect_rate=0.5, seed=1)
    generate(tmp_path / "cam2", 2, (48, 48), defect_rate=0.5, seed=2)
    line = tmp_path / "line"
    line.mkdir()
    for camera in ("cam1", "cam2"):
        (line / camera).symlink_to(tmp_path / camera / "images")
    out = tmp_path / "r.parquet"
    options = ["--device", "cpu", "--decoder", "pil", "--precision", "fp32", "-q"]
    result = CliRunner().invoke(main, ["run", str(line), "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    paths = sorted(
        Path(path).relative_to(line).parts[0] for path in pq.read_table(out)["path"].to_pylist()
    )
    assert paths == ["cam1"] * 3 + ["cam2"] * 2
    assert len(image_files(line)) == 5  # calibration and parity image folders
    review = tmp_path / "review"  # the classes layout, its defect types linked in
    (review / "defective").mkdir(parents=True)
    (review / "good").symlink_to(tmp_path / "cam2" / "images")
    (review / "defective" / "crack").symlink_to(tmp_path / "cam1" / "images")
    samples = read_dataset(review, "classes")
    ids = sorted(sample.id.split("/")[:2] for sample in samples)
    assert ids == [["defective", "crack"]] * 3 + [["good", "synth_00000"], ["good", "synth_00001"]]


def test_a_folder_that_cannot_be_read_is_named_not_passed_over_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its images were left out without a word (checked by hand as an unprivileged user
    with a folder of mode 000: the same lines)."""
    inputs = tmp_path / "in"
    for folder, seed in (("locked", 1), ("open", 2)):
        generate(inputs / folder, 1, (48, 48), defect_rate=0, seed=seed)
    locked = inputs / "locked"
    refused = [locked]
    refuse_listing(monkeypatch, refused)
    options = ["--device", "cpu", "--decoder", "pil", "--precision", "fp32"]
    out = tmp_path / "r.parquet"
    result = CliRunner().invoke(main, ["run", str(inputs), "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    said = "note: could not read 1 folder in the inputs, whose images are not inspected: "
    assert result.output.startswith(f"{said}{locked} (Permission denied)\n"), result.output
    assert pq.read_table(out).num_rows == 1
    refused.append(inputs / "open")
    again = CliRunner().invoke(main, ["run", str(inputs), "--out", str(tmp_path / "n.parquet")])
    assert again.exit_code == 1 and again.output.startswith(
        f"Error: no input images in {inputs}: could not read 2 folders in the inputs"
    ), again.output


def test_a_link_that_cannot_be_followed_is_a_file_not_the_end_of_the_search(
    tmp_path: Path,
) -> None:
    """A loop of links among the inputs ended a run ('Error: in/loop.png: Too many levels
    of symbolic links') and a watch, and training called it a damaged image."""
    inputs = tmp_path / "in"
    generate(inputs / "cam", 2, (48, 48), defect_rate=0, seed=1)
    images = inputs / "cam" / "images"
    (images / "loop.png").symlink_to("loop.png")
    (images / "loop").symlink_to("loop")
    found = sorted(path.name for path in files_below(images))
    assert found == ["loop", "loop.png", "synth_00000.png", "synth_00001.png"]
    scan = FolderScan(inputs, tmp_path / "out", set())
    pending = sorted(path.name for path in scan.pending(now=0.0))
    assert pending == ["loop.png", "synth_00000.png", "synth_00001.png"]
    loops = "cannot be read (Too many levels of symbolic links)"
    train = ["train", str(inputs / "cam"), "--out", str(tmp_path / "m.pt"), "--width", "0.125"]
    refused = CliRunner().invoke(main, train)  # named before training, as it was not
    assert refused.exit_code == 1
    assert refused.output == f"Error: {images / 'loop.png'}: {loops}\n", refused.output
    out = tmp_path / "r.parquet"
    options = ["--device", "cpu", "--decoder", "pil", "--precision", "fp32"]
    result = CliRunner().invoke(main, ["run", str(images), "--out", str(out), *options])
    assert result.exit_code == 3, result.output  # some images failed
    rows = pq.read_table(out, columns=["path", "error"]).to_pylist()
    errors = {Path(row["path"]).name: row["error"] for row in rows}
    assert errors["synth_00000.png"] is None and errors["synth_00001.png"] is None
    assert errors["loop.png"] == loops, errors
