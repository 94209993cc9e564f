"""The training and evaluation commands, end to end on a tiny synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from psicbatch.assets import demo_model_path
from psicbatch.cli import main

TINY = ["--width", "0.125", "--input-size", "48x48", "--seg-epochs", "2", "--cls-epochs", "2"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "synth"
    result = CliRunner().invoke(
        main, ["synth", str(out), "--count", "30", "--size", "48x48", "--defect-rate", "0.4"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_synth_writes_folder_layout(dataset: Path) -> None:
    assert len(list((dataset / "images").glob("*.png"))) == 30
    assert len(list((dataset / "masks").glob("*.png"))) == 12
    assert json.loads((dataset / "synth.json").read_text())["count"] == 30


def test_train_then_eval(dataset: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    model = tmp_path / "model.pt"
    result = runner.invoke(main, ["train", str(dataset), "--out", str(model), "-q", *TINY])
    assert result.exit_code == 0, result.output
    assert "next: psicbatch eval" in result.output
    report = tmp_path / "report"
    result = runner.invoke(main, ["eval", str(model), str(dataset), "-o", str(report), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((report / "metrics.json").read_text())
    assert summary["images"] == 30 and summary["defective_images"] == 12
    for key in ("mask_miou", "boundary_miou", "two_class_miou"):
        assert 0 <= summary["segmentation"][key] <= 1
    rows = pq.read_table(report / "predictions.parquet").to_pylist()
    assert len(rows) == 30 and {"id", "probability", "mask_iou"} <= set(rows[0])
    assert (report / "pr_curve.png").stat().st_size > 0
    assert "Mask mIoU" in (report / "report.md").read_text()


def test_cv_reports_in_paper_layout_and_resumes(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    args = ["cv", str(dataset), "--folds", "2", "--out", str(out), "-q", *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "cv.json").read_text())
    assert len(report["folds"]) == 2
    assert set(report["tables"]["table1"]["mask_miou"]) == {"mean", "max", "min"}
    assert {"auc", "ap", "accuracy", "fp", "fn"} <= set(report["tables"]["table3"])
    splits = json.loads((out / "splits.json").read_text())
    all_ids = sorted(r["id"] for r in pq.read_table(out / "predictions.parquet").to_pylist())
    assert sorted(i for fold in splits["test_ids"] for i in fold) == all_ids
    assert len(pq.read_table(out / "predictions.parquet")) == 30
    markdown = (out / "report.md").read_text()
    assert "paper Table 1 layout" in markdown and "psicbatch cv" in markdown
    pages = ["fold1/evaluation/report.html", "fold2/evaluation/report.html"]
    assert report["fold_pages"] == pages and all((out / page).is_file() for page in pages)
    assert f"`{pages[1]}`" in markdown
    shown = json.loads(CliRunner().invoke(main, ["info", str(out), "--json"]).output)
    assert shown["folds"] == 2 and shown["images"] == 30
    assert shown["AP (%)"] == round(100 * report["pooled"]["classification"]["ap"], 2)
    # A rerun finds every fold finished and only rewrites the summary.
    stamp = (out / "fold1" / "model.pt").stat().st_mtime_ns
    assert CliRunner().invoke(main, args).exit_code == 0
    assert (out / "fold1" / "model.pt").stat().st_mtime_ns == stamp
    # Another job's rerun is refused before any work, not reported with these folds.
    for change, named in (
        (["--seg-epochs", "3"], "the training options"),
        (["--folds", "3"], "the folds (--folds, --seed, the dataset's images)"),
    ):
        changed = [*args, *change] if change[0] != "--folds" else [*args[:2], *change, *args[4:]]
        refused = CliRunner().invoke(main, changed)
        assert refused.exit_code == 1 and f"differs in {named}" in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1
    assert (out / "fold1" / "model.pt").stat().st_mtime_ns == stamp


def test_cv_runs_a_single_fold_with_the_mask_study_options(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "one-fold"
    args = [
        "cv",
        str(dataset),
        "--folds",
        "3",
        "--fold",
        "2",
        "--out",
        str(out),
        "-q",
        "--alpha-cap",
        "0.9",
        "--pixel-threshold",
        "iou",
        "--dice-weight",
        "0.5",
        *TINY,
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "cv.json").read_text())
    assert [fold["fold"] for fold in report["folds"]] == [2]
    assert report["options"]["alpha_cap"] == 0.9 and report["options"]["pixel_threshold"] == "iou"
    assert report["options"]["dice_weight"] == 0.5
    assert not (out / "fold1").exists() and (out / "fold2" / "model.pt").exists()
    assert "mask_miou_gated" in report["tables"]["table1"]
    bad = CliRunner().invoke(main, [*args[:4], "--fold", "4", *args[6:]])
    assert bad.exit_code == 1 and "--fold must be between 1 and 3" in bad.output


def test_train_on_missing_folder_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", str(tmp_path / "nope"), "--out", "m.pt"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path / 'nope'}: not a folder"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--width", "0"),
        ("--width", "-1"),
        ("--width", "nan"),
        ("--batch-size", "0"),
        ("--input-size", "7x7"),
        ("--input-size", "0x0"),
        ("--input-size", "100x100"),  # not a multiple of 8
        ("--seg-lr", "inf"),
        ("--dice-weight", "nan"),
    ],
)
def test_impossible_training_options_are_refused_before_any_data_is_read(
    tmp_path: Path, option: str, value: str
) -> None:
    # The data folder does not exist: a usage error (2) proves nothing was read first.
    result = CliRunner().invoke(
        main, ["train", str(tmp_path / "no-data"), "--out", str(tmp_path / "m.pt"), option, value]
    )
    assert result.exit_code == 2, result.output
    assert option in result.output


def _folder_dataset(root: Path, count: int, mask_size: tuple[int, int] | None = None) -> Path:
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        Image.fromarray(np.full((48, 64), 100, np.uint8)).save(root / "images" / f"{i}.png")
    if mask_size is not None:
        mask = np.zeros(mask_size, np.uint8)
        mask[5:9, 5:9] = 255
        Image.fromarray(mask).save(root / "masks" / "0.png")
    return root


def test_training_needs_two_images(tmp_path: Path) -> None:
    data = _folder_dataset(tmp_path / "one", 1)
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "m.pt"), *TINY])
    assert result.exit_code == 1 and "at least 2" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_masks_of_another_size_than_their_image_are_refused(tmp_path: Path) -> None:
    data = _folder_dataset(tmp_path / "data", 4, mask_size=(24, 32))  # half the image
    for command in (
        ["train", "--out", str(tmp_path / "m.pt"), *TINY],
        ["eval", str(demo_model_path())],
    ):
        args = (
            [command[0], *command[1:], str(data)]
            if command[0] == "train"
            else [*command, str(data)]
        )
        result = CliRunner().invoke(main, [*args, "-q"])
        assert result.exit_code == 1, result.output
        message = result.output.strip()
        assert "0.png: mask is 32x24" in message and "is 64x48" in message
        assert len(message.splitlines()) == 1
