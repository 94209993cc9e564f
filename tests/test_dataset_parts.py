"""Published train/test divisions (``--split``) and DAGM's classes as defect types."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from psicbatch.assets import demo_model_path
from psicbatch.checkpoint import load_checkpoint
from psicbatch.cli import main
from psicbatch.data.combined import division_note, read_datasets
from psicbatch.data.splits import kfold_by_group
from psicbatch.data.synth import generate
from psicbatch.errors import PsicbatchError
from tests.test_layouts import make_classes

TINY = ["--width", "0.125", "--input-size", "32x32", "--seg-epochs", "1", "--cls-epochs", "1"]
FAST = ["--precision", "fp32", "--device", "cpu", "-q"]


def make_dagm_classes(root: Path, classes: tuple[str, ...] = ("Class1", "Class2")) -> None:
    """DAGM 2007's published layout: in each class, Train/ and Test/ with three good and
    three defective images each (distinct noise, so no two files are identical), the
    defective ones listed in Label/Labels.txt with their masks."""
    rng = np.random.default_rng(0)
    for name in classes:
        for part in ("Train", "Test"):
            folder = root / name / part
            (folder / "Label").mkdir(parents=True)
            lines = ["6"]
            for index in range(6):
                number = f"{index + 1:04d}"
                pixels = rng.integers(0, 256, (32, 32), np.uint8)
                Image.fromarray(pixels).save(folder / f"{number}.PNG")
                if index < 3:
                    lines.append(f"{index + 1}\t0\t{number}.PNG\t0\t")
                    continue
                mask = np.zeros((32, 32), np.uint8)
                mask[8:16, 10:20] = 255
                Image.fromarray(mask).save(folder / "Label" / f"{number}_label.PNG")
                lines.append(f"{index + 1}\t1\t{number}.PNG\t0\t{number}_label.PNG")
            (folder / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")


def test_a_split_reads_one_published_part_and_only_where_there_is_one(tmp_path: Path) -> None:
    dagm = tmp_path / "dagm"
    make_dagm_classes(dagm)
    whole, layouts = read_datasets([dagm], "auto")
    train, _ = read_datasets([dagm], "auto", "train")
    test, _ = read_datasets([dagm], "auto", "test")
    assert layouts == ["dagm"] and len(whole) == 24
    assert len(train) == len(test) == 12 and {*train, *test} == set(whole)
    assert all("/Train/" in s.id for s in train) and all("/Test/" in s.id for s in test)
    assert division_note([dagm], whole, "all") == (
        f"{dagm}: the published train and test parts read together (12 train and 12 test "
        "images); --split train or --split test reads one"
    )
    assert (
        division_note([dagm], test, "test") == f"{dagm}: the 12 images of the published test part"
    )
    # Several folders: the part of those divided so, the others whole.
    make_classes(tmp_path / "reviewed")
    mixed, _ = read_datasets([dagm, tmp_path / "reviewed"], "auto", "test")
    assert len(mixed) == 12 + 4
    assert division_note([dagm, tmp_path / "reviewed"], mixed, "test").endswith(
        "the 12 images of the published test part, other folders whole"
    )
    assert (
        division_note(
            [tmp_path / "reviewed"], read_datasets([tmp_path / "reviewed"], "auto")[0], "all"
        )
        is None
    )
    # A split that would pick nothing is refused, naming the folder.
    synthetic = tmp_path / "synthetic"
    generate(synthetic, 4, (16, 16), seed=1)
    with pytest.raises(PsicbatchError, match="--split train: no published train/test division"):
        read_datasets([synthetic], "auto", "train")
    for removed in ("Class1/Test", "Class2/Test"):
        for file in sorted((dagm / removed).rglob("*"), reverse=True):
            file.rmdir() if file.is_dir() else file.unlink()
        (dagm / removed).rmdir()
    with pytest.raises(
        PsicbatchError, match=r"dagm: no images in its test part \(the dagm layout\)"
    ):
        read_datasets([dagm], "auto", "test")


def test_dagm_classes_are_defect_types_and_every_fold_holds_each_class(tmp_path: Path) -> None:
    make_dagm_classes(tmp_path)
    samples, _ = read_datasets([tmp_path], "dagm")
    assert Counter(s.defect_type for s in samples if s.is_defective) == {"Class1": 6, "Class2": 6}
    assert {s.defect_type for s in samples if not s.is_defective} == {""}
    assert len({s.group for s in samples}) == 24  # images, not classes: no texture left unseen
    folds = kfold_by_group(samples, 3, seed=0)
    by_id = {s.id: s for s in samples}
    for test_ids in folds:
        kinds = Counter(by_id[i].defect_type for i in test_ids if by_id[i].is_defective)
        assert kinds == {"Class1": 2, "Class2": 2}
    assert sorted(len(ids) for ids in folds) == [8, 8, 8]


def test_train_on_the_train_part_and_eval_on_the_test_part(tmp_path: Path) -> None:
    dagm, model = tmp_path / "dagm", tmp_path / "model.pt"
    make_dagm_classes(dagm)
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(dagm), "--split", "train", "-o", str(model), *TINY])
    assert result.exit_code == 0, result.output
    assert f"note: {dagm}: the 12 images of the published train part" in result.output
    assert result.output.rstrip().endswith(
        f"next: psicbatch eval {model} {dagm} --split test --layout dagm"
    )
    dataset = load_checkpoint(model).training["dataset"]
    assert dataset["split"] == "train" and dataset["images"] == 12
    shown = json.loads(runner.invoke(main, ["info", str(model), "--json"]).output)
    assert shown["training"]["data"] == f"{dagm} (dagm, train part)"
    report = tmp_path / "report"
    args = ["eval", str(model), str(dagm), "--split", "test", "-o", str(report), *FAST]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"# Evaluation of {model} on {dagm} (test part)" in result.output
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["images"] == 12 and metrics["defective_images"] == 6
    assert metrics["division"] == f"{dagm}: the 12 images of the published test part"
    assert metrics["overlap"]["training"] == 0  # none of the test part was trained on
    assert [kind["defect_type"] for kind in metrics["defect_types"]] == ["Class1", "Class2"]
    assert "the 12 images of the published test part." in (report / "report.md").read_text()
    summary = json.loads(runner.invoke(main, ["info", str(report), "--json"]).output)
    assert summary["dataset parts"] == metrics["division"]
    # Both parts: the trained-on half is counted as such.
    both = tmp_path / "both"
    result = runner.invoke(main, ["eval", str(model), str(dagm), "-o", str(both), *FAST])
    assert result.exit_code == 0, result.output
    metrics = json.loads((both / "metrics.json").read_text())
    assert metrics["images"] == 24 and metrics["overlap"]["training"] == 12
    assert "read together (12 train and 12 test images)" in metrics["division"]


def test_info_shows_the_published_parts(tmp_path: Path) -> None:
    make_dagm_classes(tmp_path)
    runner = CliRunner()
    shown = json.loads(runner.invoke(main, ["info", str(tmp_path), "--json"]).output)
    assert shown["published parts"] == [
        "train: 12 images, 6 defective",
        "test: 12 images, 6 defective",
    ]
    assert shown["defect types"] == ["Class1: 6", "Class2: 6"]
    result = runner.invoke(main, ["info", str(tmp_path), "--split", "test", "--json"])
    shown = json.loads(result.output)
    assert shown["folder"] == f"{tmp_path} (test part)" and shown["images"] == 12
    assert shown["published parts"] == ["test: 12 images, 6 defective"]


def test_cv_records_its_part_and_refuses_another(tmp_path: Path) -> None:
    dagm, out = tmp_path / "dagm", tmp_path / "cv"
    make_dagm_classes(dagm)
    args = ["cv", str(dagm), "--folds", "2", "-o", str(out), "-q", *TINY]
    runner = CliRunner()
    result = runner.invoke(main, [*args, "--split", "train"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "cv.json").read_text())
    assert report["dataset"] == f"{dagm} (train part)" and report["images"] == 12
    assert json.loads((out / "cv_job.json").read_text())["dataset"]["split"] == "train"
    other = runner.invoke(main, [*args, "--split", "test"])
    assert other.exit_code == 1 and "differs in the dataset" in other.output


def test_calibrate_and_an_audit_read_the_part_asked_for(tmp_path: Path) -> None:
    dagm = tmp_path / "dagm"
    make_dagm_classes(dagm)
    runner = CliRunner()
    decisions = tmp_path / "decisions.json"
    args = ["calibrate", str(dagm), "--split", "test", "--model", str(demo_model_path())]
    result = runner.invoke(main, [*args, "-o", str(decisions), "-q"])
    assert result.exit_code == 0, result.output
    validation = json.loads(decisions.read_text())["validation"]
    assert validation["defective"] + validation["good"] == 12
    assert validation["source"].startswith(f"{dagm} (test part) scored by ")
    # A run of the whole dataset, its results of the test part scored.
    results = tmp_path / "results.parquet"
    run = ["run", str(dagm), "--layout", "dagm", "-o", str(results), "--decoder", "pil", *FAST]
    result = runner.invoke(main, run)
    assert result.exit_code == 0, result.output
    audit = tmp_path / "audit"
    args = ["eval", str(results), "--labels", str(dagm), "--split", "test", "-o", str(audit), "-q"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((audit / "metrics.json").read_text())
    assert metrics["images"] == 12 and "12 results are of images not labelled" in metrics["source"]
    # A run of the test part alone.
    tested = tmp_path / "test.parquet"
    result = runner.invoke(main, [*run[:5], str(tested), *run[6:], "--split", "test"])
    assert result.exit_code == 0, result.output
    assert sorted(pq.read_table(tested)["path"].to_pylist()) == sorted(
        str(path) for path in dagm.glob("Class*/Test/*.PNG")
    )
    refused = runner.invoke(main, ["run", str(dagm), "--split", "test", "-o", str(tested)])
    assert refused.exit_code == 2 and "give --layout" in refused.output
    # Eval predictions were made on their images already: no part to pick.
    refused = runner.invoke(
        main,
        [
            "calibrate",
            str(audit / "predictions.parquet"),
            "--split",
            "test",
            "-o",
            str(tmp_path / "x.json"),
        ],
    )
    assert (
        refused.exit_code == 1
        and "--split test picks a part of a labelled dataset" in refused.output
    )
