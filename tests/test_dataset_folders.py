"""A folder of a dataset (``kolektorsdd/kos05``, ``dagm/Class3/Test``) read as that part of
the dataset, by every command that reads datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from psicbatch.assets import demo_model_path
from psicbatch.cli import main
from psicbatch.data.combined import read_datasets
from psicbatch.data.layouts import (
    SampleRef,
    folder_of_dataset,
    guess_layout,
    read_dataset,
    resolve_layout,
)
from psicbatch.errors import PsicbatchError
from tests.test_layouts import gray, make_classes, make_dagm, make_kolektorsdd, palette_mask


def make_two_class_dagm(root: Path) -> None:
    make_dagm(root)
    shutil.copytree(root / "Class3", root / "Class5")


FOLDERS_OF_DATASETS = [  # the dataset's maker, a folder inside it, its layout
    (make_kolektorsdd, "kos01", "kolektorsdd"),
    (make_two_class_dagm, "Class3", "dagm"),
    (make_two_class_dagm, "Class3/Test", "dagm"),
    (make_classes, "NG", "classes"),
]


def _within(samples: list[SampleRef], folder: Path) -> list[SampleRef]:
    return [s for s in samples if folder in s.image_path.parents]


@pytest.mark.parametrize(("make", "inside", "layout"), FOLDERS_OF_DATASETS)
def test_a_folder_reads_as_its_part_of_the_dataset(
    tmp_path: Path, make, inside: str, layout: str
) -> None:
    make(tmp_path)
    folder = tmp_path / inside
    whole = read_dataset(tmp_path, layout)
    expected = _within(whole, folder)
    assert 0 < len(expected) < len(whole)
    for asked in ("auto", layout):
        assert read_dataset(folder, asked) == expected  # ids, groups, masks as in the whole
    assert resolve_layout(folder, "auto") == guess_layout(folder) == layout
    part = folder_of_dataset(folder)
    assert part is not None and (part.dataset, part.inside) == (tmp_path, tuple(inside.split("/")))
    assert folder_of_dataset(tmp_path) is None  # a dataset itself is no folder of one


def test_kolektorsdd2_parts_and_the_folder_layouts_images(tmp_path: Path) -> None:
    ksdd2, own = tmp_path / "ksdd2", tmp_path / "own"
    for subset, name in (("train", "10000"), ("test", "20000")):
        (ksdd2 / subset).mkdir(parents=True)
        gray().save(ksdd2 / subset / f"{name}.png")
        palette_mask(defect=subset == "test").convert("L").save(ksdd2 / subset / f"{name}_GT.png")
    (sample,) = read_dataset(ksdd2 / "test", "auto")
    assert (sample.id, sample.subset, sample.is_defective) == ("test/20000", "test", True)
    (own / "images").mkdir(parents=True)
    gray().save(own / "images" / "a.png")
    assert read_dataset(own / "images", "auto") == read_dataset(own, "folder")  # all of it


def test_folders_that_are_no_part_of_a_dataset_are_still_refused(tmp_path: Path) -> None:
    make_classes(tmp_path / "reviewed")
    make_dagm(tmp_path / "dagm")
    for folder in (
        tmp_path / "reviewed" / "masks",
        tmp_path / "dagm" / "Class3" / "Train" / "Label",
    ):
        with pytest.raises(
            PsicbatchError,
            match=r"not a dataset layout psicbatch knows \(.*\) nor one of their folders",
        ):
            read_dataset(folder, "auto")
        assert folder_of_dataset(folder) is None and guess_layout(folder) is None
    (tmp_path / "kos_old").mkdir()  # beside no kosNN folder: no KolektorSDD part
    assert folder_of_dataset(tmp_path / "kos_old", "kolektorsdd") is None
    with pytest.raises(PsicbatchError, match="no images found in the 'kolektorsdd' layout"):
        read_dataset(tmp_path / "kos_old", "kolektorsdd")
    # A dataset asked for in the layout it has is read as itself, whatever its parent holds.
    make_kolektorsdd(tmp_path / "kos02")
    assert folder_of_dataset(tmp_path / "kos02", "kolektorsdd") is None
    assert len(read_dataset(tmp_path / "kos02", "kolektorsdd")) == 4


def test_several_folders_of_one_dataset_keep_its_ids_and_never_repeat_an_image(
    tmp_path: Path,
) -> None:
    make_kolektorsdd(tmp_path / "ksdd")
    make_dagm(tmp_path / "dagm")
    ksdd = tmp_path / "ksdd"
    samples, layouts = read_datasets([ksdd / "kos01", ksdd / "kos02"], "auto")
    assert layouts == ["kolektorsdd", "kolektorsdd"]
    prefix = ksdd.as_posix()
    assert [s.id for s in samples] == [
        f"{prefix}/{id}" for id in ("kos01/Part0", "kos01/Part1", "kos02/Part0", "kos02/Part1")
    ]
    assert {s.group for s in samples} == {f"{prefix}/kos01", f"{prefix}/kos02"}
    for roots in ([ksdd, ksdd / "kos02"], [tmp_path / "dagm" / "Class3", tmp_path / "dagm"]):
        with pytest.raises(PsicbatchError) as error:
            read_datasets(roots, "auto")
        assert str(error.value).startswith(
            f"{roots[1]}: its images are also read from {roots[0]} ("
        )
        assert str(error.value).endswith(" more); give each folder once")


def test_run_eval_and_info_take_folders_of_a_dataset(tmp_path: Path) -> None:
    make_kolektorsdd(tmp_path / "ksdd")
    kos01, kos02 = (str(tmp_path / "ksdd" / name) for name in ("kos01", "kos02"))
    runner = CliRunner()
    plain = runner.invoke(main, ["run", kos01, "--out", str(tmp_path / "all.parquet")])
    assert plain.exit_code == 0, plain.output
    assert "2 input files look like a dataset's defect masks" in plain.output
    assert "--layout kolektorsdd takes a dataset's images only" in plain.output
    out = tmp_path / "images.parquet"
    run = runner.invoke(main, ["run", kos01, "--layout", "kolektorsdd", "--out", str(out), "-q"])
    assert run.exit_code == 0, run.output
    assert pq.read_table(out).column("path").to_pylist() == [
        f"{kos01}/Part0.jpg",
        f"{kos01}/Part1.jpg",
    ]
    report = tmp_path / "evaluation"
    scored = runner.invoke(
        main, ["eval", str(demo_model_path()), kos01, kos02, "--out", str(report), "-q"]
    )
    assert scored.exit_code == 0, scored.output
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["images"] == 4 and metrics["defective_images"] == 1
    shown = runner.invoke(main, ["info", kos01, "--json"])
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.output)
    assert summary["part of the dataset"] == [f"{tmp_path / 'ksdd'} (its folder kos01)"]
    assert summary["images"] == 2 and summary["defective"] == 1
