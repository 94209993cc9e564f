"""Evaluation reads each image as it is scored: bounded memory on a test set of any size,
the same figures as scoring images held in memory, and one decode for a comparison."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from psicbatch.assets import demo_model_path
from psicbatch.cli import main
from psicbatch.cpus import available_cpus
from psicbatch.data.labelled import read_labelled
from psicbatch.data.layouts import read_dataset
from psicbatch.data.memory import load_into_memory
from psicbatch.data.synth import generate
from psicbatch.engines.base import Engine
from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.evaluate import evaluate, evaluate_engines

IMAGES = 40


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("labelled")
    generate(data, IMAGES, (96, 160), defect_rate=0.3, seed=3)
    return data


def _same(first: dict, second: dict) -> bool:
    return (
        all(
            a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
            for a, b in zip(first.values(), second.values(), strict=True)
        )
        and first.keys() == second.keys()
    )


def test_streamed_scores_equal_scores_of_images_held_in_memory(dataset: Path) -> None:
    engine = open_engine(EngineSpec(checkpoint=demo_model_path(), precision="fp32"), "cpu", 8)
    samples = read_dataset(dataset, "folder")
    preprocessing = engine.manifest.engine_preprocessing()
    held = load_into_memory(samples, preprocessing.input_size, preprocessing.channels)
    in_memory = evaluate(engine, samples, held, batch_size=8)
    (streamed,) = evaluate_engines(
        [engine], read_labelled(samples, preprocessing, 8), len(samples), batch_size=8
    )
    assert len(streamed.rows) == IMAGES
    assert all(_same(a, b) for a, b in zip(in_memory.rows, streamed.rows, strict=True))
    assert streamed.summary.to_dict() == in_memory.summary.to_dict()


def test_eval_reads_images_as_it_scores_them(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the first batch reaches the engine, at most the read-ahead has been decoded,
    not the whole test set."""
    opened: list[str] = []
    read_when_scored: list[int] = []
    original_open, original_infer = Image.open, Engine.infer

    def counting_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(str(file))
        return original_open(file, *args, **kwargs)

    def recording_infer(self, images):  # type: ignore[no-untyped-def]
        read_when_scored.append(sum("/images/" in name for name in opened))
        return original_infer(self, images)

    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setattr(Engine, "infer", recording_infer)
    args = ["eval", str(demo_model_path()), str(dataset), "-o", str(tmp_path / "e")]
    result = CliRunner().invoke(main, [*args, "--batch-size", "4", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert len(read_when_scored) == IMAGES // 4
    assert read_when_scored[0] <= 2 * 4 + available_cpus() + 4 < IMAGES


def test_compare_to_a_checkpoint_that_reads_images_otherwise_is_one_line(
    dataset: Path, tmp_path: Path
) -> None:
    rgb = tmp_path / "rgb.pt"
    made = CliRunner().invoke(main, ["init", str(rgb), "--in-channels", "3", "--width", "0.125"])
    assert made.exit_code == 0, made.output
    args = ["eval", str(demo_model_path()), str(dataset), "-o", str(tmp_path / "e")]
    result = CliRunner().invoke(main, [*args, "--compare-to", str(rgb), "-q"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert f"{rgb}: reads images differently" in result.output
    assert "channels 3 (engine: 1)" in result.output
    assert not (tmp_path / "e").exists()
