"""Training that starts from a trained checkpoint (``train --init``, ``cv --init``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from psicbatch.checkpoint import load_checkpoint, save_checkpoint
from psicbatch.cli import main
from psicbatch.data.layouts import read_dataset
from psicbatch.data.memory import load_into_memory
from psicbatch.data.synth import generate
from psicbatch.fine_tuning import starting_point
from psicbatch.fingerprints import ImageSet
from psicbatch.train import Trainer
from psicbatch.train_options import TrainOptions

EPOCHS = ["--seg-epochs", "1", "--cls-epochs", "1", "-q"]
SMALL = ["--width", "0.125", "--input-size", "40x48"]  # the first model's network


def _invoke(*args: object) -> str:
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    return result.output


def _refusal(*args: object) -> str:
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A line's first images and its model (width 0.125, 40x48), and newer images of
    another brightness."""
    root = tmp_path_factory.mktemp("line")
    generate(root / "first", 16, (48, 56), defect_rate=0.5, seed=1)
    generate(root / "newer", 12, (48, 56), defect_rate=0.5, seed=2)
    for image in (root / "newer" / "images").glob("*.png"):  # a brighter lamp
        Image.open(image).point(lambda value: min(255, value + 40)).save(image)
    model = root / "first.pt"
    _invoke("train", root / "first", "-o", model, *SMALL, *EPOCHS)
    return {"first": root / "first", "newer": root / "newer", "model": model}


def test_no_epochs_from_a_checkpoint_keep_its_weights_and_what_they_were_learnt_on(
    line: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "tuned.pt"
    no_epochs = ["--seg-epochs", "0", "--cls-epochs", "0"]
    args = ["train", line["newer"], "--init", line["model"], "-o", out, *no_epochs]
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    assert f"note: starting from the weights of {line['model']} (SHA-256 " in result.output
    assert "trained on 16 images of" in result.output
    assert "note: input size 40x48 (auto: the starting checkpoint's)" in result.output
    assert "among those the starting checkpoint was trained on" not in result.output
    start, tuned = load_checkpoint(line["model"]), load_checkpoint(out)
    assert tuned.model_config == start.model_config  # width 0.125 kept, not the default
    assert all(torch.equal(tuned.state_dict[k], v) for k, v in start.state_dict.items())
    # The newer images are brighter, but the weights were learnt on the first ones' numbers.
    assert tuned.preprocessing == start.preprocessing
    record = tuned.training["init"]
    assert (
        record["sha256"]
        == starting_point(line["model"]).digest
        == tuned.training["options"]["init"]
    )
    assert record["images"] == 16 and record["data"] == str(line["first"])
    # The images it has seen: its own and those of the model it started from.
    seen = ImageSet.decode(tuned.training["image_digests"])
    assert len(seen) == 28 == len(ImageSet.of_files(line["first"].glob("images/*.png"))) + 12
    shown = json.loads(_invoke("info", out, "--json"))["training"]["started_from"]
    assert shown.startswith(f"{line['model']} (SHA-256 {record['sha256'][:12]}...")


def test_fine_tuning_trains_on_from_the_starting_weights(
    line: dict[str, Path], tmp_path: Path
) -> None:
    tuned, scratch = tmp_path / "tuned.pt", tmp_path / "scratch.pt"
    _invoke("train", line["newer"], "--init", line["model"], "-o", tuned, "--seed", "5", *EPOCHS)
    _invoke("train", line["newer"], "-o", scratch, *SMALL, "--seed", "5", *EPOCHS)
    start = load_checkpoint(line["model"]).state_dict
    weights, from_scratch = load_checkpoint(tuned).state_dict, load_checkpoint(scratch).state_dict
    name = "features.layers.0.0.weight"
    assert not torch.equal(weights[name], start[name])
    # The epoch moved the weights from where the first model left them; the same epoch
    # from random weights (another seed) ends far from them.
    moved = (weights[name] - start[name]).norm()
    assert 10 * moved < (from_scratch[name] - start[name]).norm()
    # The new model reads images as the first did, so an evaluation sets them side by side.
    report = tmp_path / "report"
    _invoke("eval", tuned, line["first"], "--compare-to", line["model"], "-o", report, "-q")
    assert f"## Against {line['model']} (torch fp32" in (report / "report.md").read_text()


def test_options_that_would_read_images_otherwise_are_refused(
    line: dict[str, Path], tmp_path: Path
) -> None:
    base = ["train", line["newer"], "--init", line["model"], "-o", tmp_path / "x.pt", *EPOCHS]
    for option, said in (  # the default width, given, is another network than the model's
        (["--width", "0.25"], "learnt on a network of width 0.125; --width 0.25 asks"),
        (["--channels", "3"], "learnt on grayscale images; --channels 3 asks for colour"),
        (["--bit-depth", "16"], "learnt on 8-bit pixels; --bit-depth 16 asks for 16-bit"),
    ):
        assert said in _refusal(*base, *option)
    assert not (tmp_path / "x.pt").exists()
    partial = tmp_path / "unfinished.pt"
    checkpoint = load_checkpoint(line["model"])
    checkpoint.training["complete"] = False
    save_checkpoint(checkpoint, partial)
    said = _refusal("train", line["newer"], "--init", partial, "-o", tmp_path / "x.pt")
    assert "an unfinished training's progress" in said


def test_a_resumed_fine_tuning_keeps_its_starting_checkpoint(
    line: dict[str, Path], tmp_path: Path
) -> None:
    other = tmp_path / "other.pt"
    _invoke("train", line["first"], "-o", other, *SMALL, "--seed", "1", *EPOCHS)
    out = tmp_path / "tuned.pt"
    _invoke("train", line["newer"], "--init", line["model"], "-o", out, *EPOCHS)
    checkpoint = load_checkpoint(out)  # saved again as a stopped training's progress
    checkpoint.training["complete"] = False
    save_checkpoint(checkpoint, tmp_path / "tuned.pt.partial")
    out.unlink()
    said = _refusal("train", line["newer"], "--init", other, "-o", out, "--resume", *EPOCHS)
    assert "was started with other options" in said and "init " in said


def test_the_trainer_takes_a_start_only_with_its_digest(line: dict[str, Path]) -> None:
    start = starting_point(line["model"])
    data = load_into_memory(read_dataset(line["newer"], "folder"), (40, 48), 1)
    options = TrainOptions(width=0.125, input_size=(40, 48))
    with pytest.raises(ValueError):
        Trainer(data, options, Path("unused.pt"), start=start)
    with pytest.raises(ValueError):
        Trainer(data, TrainOptions(width=0.125, input_size=(40, 48), init=start.digest), Path("x"))


def test_cv_from_a_checkpoint_counts_the_images_it_had_learnt_from(
    line: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "cv"
    said = _invoke(
        "cv", line["first"], "--init", line["model"], "--folds", "2", "-o", out, *EPOCHS[:-1]
    )
    seen = "note: 16 of these 16 images are among those the starting checkpoint was trained on"
    assert f"{seen}; test images among them are not new to their folds' models" in said
    report = json.loads((out / "cv.json").read_text())
    assert report["init"]["sha256"] == starting_point(line["model"]).digest
    # The starting model was trained on every image, so each test image was seen.
    tested = [fold["test_images"] for fold in report["folds"]]
    assert [fold["summary"]["overlap"]["training"] for fold in report["folds"]] == tested
    markdown = (out / "report.md").read_text()
    assert (
        f"input 40x48 (auto: the starting checkpoint's), every fold fine-tuned from {line['model']}"
        in markdown
    )
    # Another starting checkpoint is another job.
    other = tmp_path / "other.pt"
    _invoke("train", line["newer"], "-o", other, *SMALL, *EPOCHS)
    said = _refusal("cv", line["first"], "--init", other, "--folds", "2", "-o", out, *EPOCHS)
    assert "differs in the training options: --init " in said


def test_from_a_tiled_checkpoint_training_tiles_and_cv_asks_for_a_size(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate(data, 4, (96, 128), defect_rate=0.5, seed=3)
    tiled, tuned = tmp_path / "tiled.pt", tmp_path / "tuned.pt"
    _invoke(
        "train", data, "-o", tiled, "--width", "0.125", "--tile", "48x48", "--overlap", "8", *EPOCHS
    )
    _invoke("train", data, "--init", tiled, "-o", tuned, *EPOCHS)
    preprocessing = load_checkpoint(tuned).preprocessing
    assert (preprocessing.input_size, preprocessing.tile_overlap) == ((48, 48), 8)
    said = _refusal("cv", data, "--init", tiled, "--folds", "2", "-o", tmp_path / "cv", *EPOCHS)
    assert "was trained on tiles" in said and "--input-size" in said
    _invoke(
        "train",
        data,
        "--init",
        tiled,
        "--input-size",
        "64x96",
        "-o",
        tmp_path / "whole.pt",
        *EPOCHS,
    )
    whole = load_checkpoint(tmp_path / "whole.pt").preprocessing
    assert (whole.input_size, whole.tile_overlap) == ((64, 96), None)
