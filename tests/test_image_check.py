"""A dataset's images are opened as far as their headers before training loads any: every
file it could not use is known in seconds, and listed by ``info DATA``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from psicbatch.cli import main
from psicbatch.data import memory
from psicbatch.data.synth import generate

TINY = ["--width", "0.125", "--input-size", "48x48", "--seg-epochs", "1", "--cls-epochs", "1"]


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """Eight synthetic images, three of which no reader can use."""
    data = tmp_path / "data"
    generate(data, 8, (48, 48), defect_rate=0.5, seed=1)
    images = sorted((data / "images").glob("*.png"))
    images[1].write_bytes(b"not an image")
    images[4].write_bytes(b"")
    frames = [Image.new("L", (48, 48), 20), Image.new("L", (48, 48), 200)]
    frames[0].save(images[6], save_all=True, append_images=frames[1:])
    return data


@pytest.mark.parametrize("command", ["train", "cv"])
def test_training_names_the_first_unusable_image_and_counts_the_rest_before_loading(
    damaged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """It stopped at the first, minutes into loading, and at the next once that was mended."""

    def loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("images were loaded")

    monkeypatch.setattr(memory, "load_into_memory", loading)
    result = CliRunner().invoke(main, [command, str(damaged), "-o", str(tmp_path / "m"), *TINY])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"Error: {damaged}/images/synth_00001.png: not a readable image (unknown or damaged "
        f"format) (and 2 more images that cannot be used; psicbatch info {damaged} lists them)"
    )


def test_info_lists_every_unusable_image_and_shows_the_rest(damaged: Path) -> None:
    result = CliRunner().invoke(main, ["info", str(damaged), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["images"] == 8
    assert summary["input size (auto)"].startswith("48x48")  # of the images that can be read
    folder = damaged / "images"
    assert summary["images that cannot be used"] == [
        f"{folder}/synth_00001.png: not a readable image (unknown or damaged format)",
        f"{folder}/synth_00004.png: empty file (0 bytes)",
        f"{folder}/synth_00006.png: holds 2 images (PNG frames); psicbatch inspects one image "
        "per file and would see only the first: save each as its own file",
    ]
    generate(damaged, 8, (48, 48), defect_rate=0.5, seed=1)  # mended
    mended = json.loads(CliRunner().invoke(main, ["info", str(damaged), "--json"]).output)
    assert "images that cannot be used" not in mended
