"""Several labelled folders trained on as one dataset (``train DATA DATA ...``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from psicbatch.assets import demo_model_path
from psicbatch.checkpoint import load_checkpoint
from psicbatch.cli import main
from psicbatch.commands.training_options import channel_count
from psicbatch.data.combined import datasets_text, read_datasets
from psicbatch.data.synth import generate
from psicbatch.errors import PsicbatchError
from psicbatch.fingerprints import ImageSet
from tests.test_layouts import make_classes, make_kolektorsdd

TINY = ["--width", "0.125", "--input-size", "32x32", "--seg-epochs", "1", "--cls-epochs", "1"]


def test_each_folder_in_its_own_layout_its_ids_and_groups_apart(tmp_path: Path) -> None:
    make_kolektorsdd(tmp_path / "line1")
    make_kolektorsdd(tmp_path / "line2")  # the same kos01 and kos02 names: other parts
    make_classes(tmp_path / "reviewed")
    roots = [tmp_path / "line1", tmp_path / "line2", tmp_path / "reviewed"]
    samples, layouts = read_datasets(roots, "auto")
    assert layouts == ["kolektorsdd", "kolektorsdd", "classes"]
    prefix = tmp_path.as_posix()
    assert [s.id for s in samples[:2]] == [
        f"{prefix}/line1/kos01/Part0",
        f"{prefix}/line1/kos01/Part1",
    ]
    assert f"{prefix}/reviewed/NG/d2" in {s.id for s in samples}
    groups = {s.group for s in samples if "kos01" in s.id}
    assert groups == {f"{prefix}/line1/kos01", f"{prefix}/line2/kos01"}
    assert len(samples) == 4 + 4 + 4 and len({s.id for s in samples}) == 12
    # One folder reads as it always has.
    alone, _ = read_datasets([tmp_path / "line1"], "auto")
    assert [s.id for s in alone] == ["kos01/Part0", "kos01/Part1", "kos02/Part0", "kos02/Part1"]
    assert datasets_text(layouts) == "kolektorsdd + kolektorsdd + classes"
    assert datasets_text(["folder", "folder"]) == "folder"


def test_a_folder_given_twice_and_colour_mixed_with_gray_are_refused(tmp_path: Path) -> None:
    make_classes(tmp_path / "reviewed")
    with pytest.raises(PsicbatchError, match="the same folder given twice"):
        read_datasets([tmp_path / "reviewed", tmp_path / "." / "reviewed"], "auto")
    (tmp_path / "link").symlink_to(tmp_path / "reviewed")
    with pytest.raises(PsicbatchError, match=r"link: the same folder given twice \(as .*reviewed"):
        read_datasets([tmp_path / "reviewed", tmp_path / "link"], "auto")
    with pytest.raises(PsicbatchError, match="choose --channels 1 or 3"):
        channel_count("auto", ["kolektorsdd2", "classes"])
    assert channel_count("auto", ["kolektorsdd2", "kolektorsdd2"]) == 3
    assert channel_count("3", ["classes"]) == 3 and channel_count("auto", ["classes"]) == 1


def test_train_and_cv_on_two_folders(tmp_path: Path) -> None:
    first, newer = tmp_path / "first", tmp_path / "newer"
    generate(first, 10, (24, 16), defect_rate=0.5, seed=1)
    make_classes(newer, good="good", defective="defective")
    (newer / "defective" / "d2.png").unlink()  # every defective image with its mask
    model = tmp_path / "model.pt"
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(first), str(newer), "-o", str(model), "-q", *TINY])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("next: psicbatch eval " + f"{model} TEST_DATA")
    dataset = load_checkpoint(model).training["dataset"]
    assert dataset["path"] == f"{first} + {newer}" and dataset["layout"] == "folder + classes"
    assert dataset["folders"] == [str(first), str(newer)] and dataset["images"] == 13
    seen = ImageSet.decode(load_checkpoint(model).training["image_digests"])
    images = [*first.glob("images/*"), *newer.glob("good/*"), *newer.glob("defective/*")]
    assert seen == ImageSet.of_files(images)
    report = tmp_path / "report"
    result = runner.invoke(main, ["eval", str(model), str(first), str(newer), "-o", str(report)])
    assert result.exit_code == 0, result.output
    assert f"# Evaluation of {model} on {first} + {newer}" in result.output
    assert "All of these images are among the" in result.output
    assert json.loads((report / "metrics.json").read_text())["images"] == 13
    out = tmp_path / "cv"
    args = ["cv", str(first), str(newer), "--folds", "2", "-o", str(out), "-q", *TINY]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "cv.json").read_text())
    assert report["dataset"] == f"{first} + {newer}" and report["images"] == 13
    job = json.loads((out / "cv_job.json").read_text())["dataset"]
    assert job["path"] == f"{first.resolve()} + {newer.resolve()}"
    swapped = runner.invoke(main, ["cv", str(newer), str(first), *args[3:]])
    assert swapped.exit_code == 1 and "differs in the dataset" in swapped.output


def test_info_shows_several_folders_as_training_reads_them(tmp_path: Path) -> None:
    make_kolektorsdd(tmp_path / "line1")
    make_classes(tmp_path / "reviewed")
    folders = [str(tmp_path / "line1"), str(tmp_path / "reviewed")]
    result = CliRunner().invoke(main, ["info", *folders, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["folder"] == " + ".join(folders) and shown["images"] == 8
    assert shown["layout"] == "kolektorsdd + classes (auto: the one its folders match)"
    assert shown["defective"] == 3 and shown["defective without a mask"] == 1
    refused = CliRunner().invoke(main, ["info", folders[0], str(tmp_path / "missing")])
    assert refused.exit_code == 1 and "missing: not a folder" in refused.output


def test_calibrate_scores_several_folders_together(tmp_path: Path) -> None:
    first, newer = tmp_path / "first", tmp_path / "newer"
    generate(first, 8, (64, 64), defect_rate=0.5, seed=4)
    generate(newer, 6, (64, 64), defect_rate=0.5, seed=5)
    decisions = tmp_path / "decisions.json"
    args = ["calibrate", str(first), str(newer), "--model", str(demo_model_path())]
    result = CliRunner().invoke(main, [*args, "-o", str(decisions), "-q"])
    assert result.exit_code == 0, result.output
    validation = json.loads(decisions.read_text())["validation"]
    assert validation["defective"] + validation["good"] == 14
    assert validation["source"].startswith(f"{first} + {newer} scored by ")
    stored = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for path in stored:
        path.write_bytes(b"")
    for mixed, said in (
        ([str(first), str(stored[0])], "not both"),
        ([str(path) for path in stored], "one file or folder at a time"),
    ):
        refused = CliRunner().invoke(main, ["calibrate", *mixed, "-o", str(tmp_path / "x.json")])
        assert refused.exit_code == 2 and said in refused.output, refused.output
