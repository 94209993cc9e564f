from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from psicbatch.data.images import ImageReadError, read_image, read_mask
from psicbatch.data.layouts import guess_layout, read_dataset, require_masks, resolve_layout
from psicbatch.data.memory import defect_mask, known_defect_mask
from psicbatch.errors import PsicbatchError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KSDD = SHARED / "kolektorsdd"
KSDD_ORIGINAL = SHARED / "kolektorsdd-original-sample"


def gray(height: int = 20, width: int = 12, value: int = 100) -> Image.Image:
    return Image.fromarray(np.full((height, width), value, np.uint8))


def palette_mask(height: int = 20, width: int = 12, defect: bool = True) -> Image.Image:
    """Like the published KolektorSDD labels: palette BMP whose *index* 1 marks the defect,
    with a palette that maps index 1 to black (so colour-based reading would miss it)."""
    indices = np.zeros((height, width), np.uint8)
    if defect:
        indices[5:9, 3:6] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    return image


def make_kolektorsdd(root: Path) -> None:
    for folder, defect in (("kos01", True), ("kos02", False)):
        (root / folder).mkdir(parents=True)
        for part in range(2):
            gray().save(root / folder / f"Part{part}.jpg")
            has_defect = defect and part == 1
            palette_mask(defect=has_defect).save(root / folder / f"Part{part}_label.bmp")


def test_kolektorsdd_palette_bmp(tmp_path: Path) -> None:
    make_kolektorsdd(tmp_path)
    samples = read_dataset(tmp_path, "kolektorsdd")
    assert [s.id for s in samples] == ["kos01/Part0", "kos01/Part1", "kos02/Part0", "kos02/Part1"]
    assert [s.is_defective for s in samples] == [False, True, False, False]
    assert {s.group for s in samples} == {"kos01", "kos02"}
    assert read_mask(samples[1].mask_path).sum() == 12


def test_kolektorsdd_png_labels(tmp_path: Path) -> None:
    (tmp_path / "kos07").mkdir()
    gray().save(tmp_path / "kos07" / "Part3.jpg")
    mask = np.zeros((20, 12), np.uint8)
    mask[2, 2] = 255
    Image.fromarray(mask).save(tmp_path / "kos07" / "Part3_label.png")
    (sample,) = read_dataset(tmp_path, "kolektorsdd")
    assert sample.is_defective and read_mask(sample.mask_path).sum() == 1


def test_kolektorsdd_missing_label(tmp_path: Path) -> None:
    (tmp_path / "kos01").mkdir()
    gray().save(tmp_path / "kos01" / "Part0.jpg")
    with pytest.raises(PsicbatchError, match=r"Part0\.jpg: no label file"):
        read_dataset(tmp_path, "kolektorsdd")


def test_a_wrong_layout_names_the_one_the_folder_looks_like(tmp_path: Path) -> None:
    ksdd, dagm = tmp_path / "ksdd", tmp_path / "dagm"
    make_kolektorsdd(ksdd)
    make_dagm(dagm)
    for root, layout, expected, guess in (
        (ksdd, "folder", "the folder layout needs an images/ subfolder", "kolektorsdd"),
        (ksdd, "dagm", "no images found in the 'dagm' layout", "kolektorsdd"),
        (dagm, "kolektorsdd", "no images found in the 'kolektorsdd' layout", "dagm"),
    ):
        with pytest.raises(PsicbatchError) as error:
            read_dataset(root, layout)
        assert str(error.value) == f"{root}: {expected}; it looks like --layout {guess}"
    (tmp_path / "other").mkdir()
    with pytest.raises(PsicbatchError, match=r"needs an images/ subfolder$"):
        read_dataset(tmp_path / "other", "folder")  # no guess: nothing added
    assert guess_layout(tmp_path / "missing") is None


def test_auto_takes_the_one_layout_the_folder_matches(tmp_path: Path) -> None:
    ksdd, dagm, reviewed = tmp_path / "ksdd", tmp_path / "dagm", tmp_path / "reviewed"
    make_kolektorsdd(ksdd)
    make_dagm(dagm)
    make_classes(reviewed)
    for root, layout in ((ksdd, "kolektorsdd"), (dagm, "dagm"), (reviewed, "classes")):
        assert resolve_layout(root, "auto") == layout
        assert read_dataset(root, "auto") == read_dataset(root, layout)
    assert resolve_layout(ksdd, "folder") == "folder"  # a layout asked for is kept
    (reviewed / "images").mkdir()  # now the folder layout's sign too: not a guess
    with pytest.raises(PsicbatchError, match="looks like the folder and the classes layouts"):
        read_dataset(reviewed, "auto")
    assert guess_layout(reviewed) is None
    with pytest.raises(PsicbatchError, match="not a dataset layout psicbatch knows"):
        read_dataset(reviewed / "masks", "auto")
    with pytest.raises(PsicbatchError, match="missing: not a folder"):
        read_dataset(tmp_path / "missing", "auto")


def test_kolektorsdd2_colour(tmp_path: Path) -> None:
    for subset, name, defect in (("train", "10000", True), ("test", "20000", False)):
        (tmp_path / subset).mkdir()
        colour = np.zeros((16, 8, 3), np.uint8)
        colour[..., 0] = 200
        Image.fromarray(colour).save(tmp_path / subset / f"{name}.png")
        mask = np.zeros((16, 8, 3), np.uint8)
        if defect:
            mask[4:6, 2:4] = 255
        Image.fromarray(mask).save(tmp_path / subset / f"{name}_GT.png")
    samples = read_dataset(tmp_path, "kolektorsdd2")
    assert [(s.id, s.is_defective, s.subset) for s in samples] == [
        ("train/10000", True, "train"),
        ("test/20000", False, "test"),
    ]
    image = read_image(samples[0].image_path, 3)
    assert image.shape == (16, 8, 3) and image[0, 0].tolist() == [200, 0, 0]
    assert read_mask(samples[0].mask_path).sum() == 4


def make_dagm(root: Path, with_labels_file: bool = True) -> None:
    for subset in ("Train", "Test"):
        folder = root / "Class3" / subset
        (folder / "Label").mkdir(parents=True)
        for number in ("0001", "0002", "0003"):
            gray(32, 32).save(folder / f"{number}.PNG")
        mask = np.zeros((32, 32), np.uint8)
        mask[10:20, 12:16] = 255
        Image.fromarray(mask).save(folder / "Label" / "0002_label.PNG")
        if with_labels_file:
            (folder / "Label" / "Labels.txt").write_text(
                "1\n1\t0\t0001.PNG\t0\t\n2\t1\t0002.PNG\t0\t0002_label.PNG\n3\t0\t0003.PNG\t0\t\n"
            )


@pytest.mark.parametrize("with_labels_file", [True, False])
def test_dagm(tmp_path: Path, with_labels_file: bool) -> None:
    make_dagm(tmp_path, with_labels_file)
    samples = read_dataset(tmp_path, "dagm")
    assert len(samples) == 6
    defective = [s.id for s in samples if s.is_defective]
    assert defective == ["Class3/Train/0002", "Class3/Test/0002"]
    assert [s.group for s in samples] == [s.id for s in samples]  # each image its own group
    assert [s.defect_type for s in samples if s.is_defective] == ["Class3", "Class3"]
    assert [s.subset for s in samples] == ["train"] * 3 + ["test"] * 3
    assert read_mask(samples[1].mask_path).sum() == 40


def test_dagm_bad_labels_line(tmp_path: Path) -> None:
    make_dagm(tmp_path)
    (tmp_path / "Class3" / "Train" / "Label" / "Labels.txt").write_text("1\n1\tX\t0001.PNG\n")
    with pytest.raises(PsicbatchError, match=r"Labels.txt:2: unexpected line"):
        read_dataset(tmp_path, "dagm")


def test_folder_layout(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("a", "b", "c"):
        gray().save(tmp_path / "images" / f"{name}.png")
    mask = np.zeros((20, 12), np.uint8)
    mask[1, 1] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "a.bmp")
    Image.fromarray(np.zeros((20, 12), np.uint8)).save(tmp_path / "masks" / "b.png")
    samples = read_dataset(tmp_path, "folder")
    assert [(s.id, s.is_defective) for s in samples] == [("a", True), ("b", False), ("c", False)]
    assert samples[2].mask_path is None


def test_unknown_layout_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(PsicbatchError, match="choose one of kolektorsdd, kolektorsdd2, dagm"):
        read_dataset(tmp_path, "coco")


def test_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(PsicbatchError, match="no images found"):
        read_dataset(tmp_path, "folder")


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match=r"broken\.png: not a readable image"):
        read_image(path, 1)


def test_sixteen_bit_png_keeps_its_top_byte(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(path)
    assert read_image(path, 1)[0, 0, 0] == 40000 >> 8


@pytest.mark.skipif(not KSDD_ORIGINAL.exists(), reason="shared KolektorSDD sample not present")
def test_real_kolektorsdd_published_bmp_labels() -> None:
    samples = read_dataset(KSDD_ORIGINAL, "kolektorsdd")
    assert len(samples) == 16
    assert [s.id for s in samples if s.is_defective] == ["kos01/Part5", "kos21/Part5"]
    mask = read_mask(next(s for s in samples if s.id == "kos01/Part5").mask_path)
    image = read_image(samples[0].image_path, 1)
    assert mask.shape == (1270, 500) and mask.sum() == 1143
    assert image.dtype == np.uint8 and image.shape[1:] == (500, 1)


@pytest.mark.skipif(not KSDD.exists(), reason="shared KolektorSDD not present")
def test_real_kolektorsdd_png_labels_match_published_bmp() -> None:
    converted = {s.id: s for s in read_dataset(KSDD, "kolektorsdd")}
    assert len(converted) == 400 and sum(s.is_defective for s in converted.values()) == 52
    for original in read_dataset(KSDD_ORIGINAL, "kolektorsdd"):
        assert np.array_equal(
            read_mask(original.mask_path), read_mask(converted[original.id].mask_path)
        )


def test_a_dagm_labels_file_that_is_a_pipe_is_named_not_waited_on(tmp_path: Path) -> None:
    make_dagm(tmp_path)
    labels = tmp_path / "Class3" / "Train" / "Label" / "Labels.txt"
    labels.unlink()
    os.mkfifo(labels)
    command = [Path(sys.executable).parent / "psicbatch", "train", tmp_path, "--layout", "dagm"]
    process = subprocess.run(
        [*command, "-o", tmp_path / "m.pt"], capture_output=True, text=True, timeout=60
    )
    assert (
        process.returncode == 1 and f"{labels}: not a regular file (named pipe)" in process.stderr
    )


def test_an_image_far_too_large_to_decode_is_named_not_a_traceback(tmp_path: Path) -> None:
    """A header claiming 3.6 gigapixels in a dataset: PIL's decompression-bomb refusal
    becomes the usual one-line error."""
    from tests.test_reliability import _png_header_only

    _png_header_only(tmp_path / "huge.png", 60000, 60000)
    with pytest.raises(ImageReadError, match=r"huge.png: image is far too large \(Image size"):
        read_image(tmp_path / "huge.png", 1)


def make_classes(root: Path, good: str = "OK", defective: str = "NG") -> None:
    """Two good images, two defective ones, one of them with a mask."""
    for folder in (good, defective, "masks"):
        (root / folder).mkdir(parents=True)
    for name in ("g1", "g2"):
        gray().save(root / good / f"{name}.png")
    for name in ("d1", "d2"):
        gray().save(root / defective / f"{name}.png")
    mask = np.zeros((20, 12), np.uint8)
    mask[3:6, 2:4] = 255
    Image.fromarray(mask).save(root / "masks" / "d1.png")


def test_classes_layout_labels_images_by_their_folder(tmp_path: Path) -> None:
    make_classes(tmp_path)
    samples = read_dataset(tmp_path, "classes")
    assert [(s.id, s.is_defective, s.mask_known) for s in samples] == [
        ("OK/g1", False, True),
        ("OK/g2", False, True),
        ("NG/d1", True, True),
        ("NG/d2", True, False),  # defective, its pixels not labelled
    ]
    assert samples[2].mask_path == tmp_path / "masks" / "d1.png"
    assert guess_layout(tmp_path) == "classes"
    other = tmp_path / "other"
    make_classes(other, "good", "defective")
    assert [s.id for s in read_dataset(other, "classes")][::2] == ["good/g1", "defective/d1"]


def test_classes_layout_refuses_a_good_image_whose_mask_marks_a_defect(tmp_path: Path) -> None:
    make_classes(tmp_path)
    mask = np.zeros((20, 12), np.uint8)
    mask[0, 0] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "g2.png")
    with pytest.raises(PsicbatchError, match=r"g2\.png: in OK/, but its mask .* marks defect"):
        read_dataset(tmp_path, "classes")
    with pytest.raises(PsicbatchError, match=r"needs a good/ .* or a defective/"):
        read_dataset(tmp_path / "masks", "classes")


def test_defective_images_without_masks_are_refused_where_masks_are_needed(
    tmp_path: Path,
) -> None:
    make_classes(tmp_path)
    samples = read_dataset(tmp_path, "classes")
    with pytest.raises(PsicbatchError, match=r"NG.d2\.png: defective without a mask; tiling"):
        require_masks(samples, "tiling")
    require_masks(samples[:3], "tiling")  # every defect's pixels known
    with pytest.raises(PsicbatchError, match="defective without a mask"):
        defect_mask(samples[3], (20, 12))  # never an empty mask in its place
    assert known_defect_mask(samples[3], (20, 12)) is None


def test_classes_layout_reads_defect_types_from_subfolders(tmp_path: Path) -> None:
    make_classes(tmp_path)
    (tmp_path / "NG" / "scratch" / "deep").mkdir(parents=True)
    gray().save(tmp_path / "NG" / "scratch" / "deep" / "d3.png")
    (tmp_path / "OK" / "line2").mkdir()
    gray().save(tmp_path / "OK" / "line2" / "g3.png")
    samples = {s.id: s for s in read_dataset(tmp_path, "classes")}
    assert samples["NG/scratch/deep/d3"].defect_type == "scratch/deep"
    assert samples["NG/d1"].defect_type == "" and samples["OK/line2/g3"].defect_type == ""
    assert not samples["OK/line2/g3"].is_defective
    # Masks are found by name: two defective images of one name are ambiguous.
    (tmp_path / "NG" / "dent").mkdir()
    gray().save(tmp_path / "NG" / "dent" / "d1.png")
    with pytest.raises(PsicbatchError, match=r"d1\.png: its mask .*d1\.png could as well be"):
        read_dataset(tmp_path, "classes")


def test_hidden_files_and_folders_are_not_part_of_a_dataset(tmp_path: Path) -> None:
    """macOS leaves ``._NAME`` files beside copied images, notebooks checkpoint folders."""
    make_classes(tmp_path)
    (tmp_path / "NG" / "._d1.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "NG" / ".ipynb_checkpoints").mkdir()
    gray().save(tmp_path / "NG" / ".ipynb_checkpoints" / "d1-checkpoint.png")
    assert [s.id for s in read_dataset(tmp_path, "classes")][2:] == ["NG/d1", "NG/d2"]
    ksdd = tmp_path / "ksdd"
    make_kolektorsdd(ksdd)
    (ksdd / ".ipynb_checkpoints").mkdir()
    gray().save(ksdd / ".ipynb_checkpoints" / "Part0.jpg")
    (ksdd / "kos01" / "._Part0.jpg").write_bytes(b"\x00\x05\x16\x07")
    assert len(read_dataset(ksdd, "kolektorsdd")) == 4


def test_info_says_how_a_dataset_is_read(tmp_path: Path) -> None:
    """``info DATA`` before training: layout, counts, masks, types, folds, copies, size."""
    import json
    import shutil

    from click.testing import CliRunner

    from psicbatch.cli import main

    review = tmp_path / "review"
    rng = np.random.default_rng(0)
    for name in ("good/g1", "good/g2", "good/g3", "defective/crack/d1", "defective/crack/d2",
                 "defective/d3"):  # fmt: skip
        (review / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 32), np.uint8)).save(review / f"{name}.png")
    shutil.copy(review / "good" / "g1.png", review / "good" / "g4.png")
    (review / "masks").mkdir()
    Image.fromarray(np.full((48, 32), 255, np.uint8)).save(review / "masks" / "d1.png")
    result = CliRunner().invoke(main, ["info", str(review), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["layout"].startswith("classes (auto")
    assert (shown["images"], shown["good"], shown["defective"]) == (7, 4, 3)
    assert shown["defective without a mask"] == 2
    assert shown["defect types"] == ["(no type): 1", "crack: 2"]
    assert shown["cv groups"].startswith("6, 3 of them with defective images, so at most 3 folds")
    assert shown["identical images"].startswith(
        "1 of the 7 images is a byte-identical copy of another"
    )
    assert shown["input size (auto)"].startswith("48x32 (auto")
    pattern = r"/([gd])\d$"  # one group of good and one of defective images
    grouped = CliRunner().invoke(main, ["info", str(review), "--group-by", pattern, "--json"])
    assert json.loads(grouped.output)["cv groups"].startswith(
        f"2 by --group-by {pattern}, 1 of them with defective images, too few for "
        "cross-validation (2 folds need 2)"
    )
    (review / "images").mkdir()  # now the folder and classes layouts both match
    result = CliRunner().invoke(main, ["info", str(review)])
    said = "a labelled dataset in one layout: it looks like the folder and the classes layouts"
    assert result.exit_code == 1 and said in result.output
    chosen = CliRunner().invoke(main, ["info", str(review), "--layout", "classes", "--json"])
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(chosen.output)["layout"] == "classes"
    assert json.loads(chosen.output)["defective"] == 3


def test_classes_masks_at_the_images_own_paths_tell_same_names_apart(tmp_path: Path) -> None:
    """masks/scratch/x.png is defective/scratch/x.png's, masks/dent/x.png the other x's;
    a mask only by name (masks/y.png) still serves ng/scratch/y.png."""
    make_classes(tmp_path)
    mask = np.zeros((20, 12), np.uint8)
    for kind, rows in (("scratch", slice(1, 3)), ("dent", slice(10, 14))):
        (tmp_path / "NG" / kind).mkdir()
        gray().save(tmp_path / "NG" / kind / "x.png")
        (tmp_path / "masks" / kind).mkdir()
        mask[:] = 0
        mask[rows, 2:4] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / kind / "x.png")
    gray().save(tmp_path / "NG" / "scratch" / "y.png")
    Image.fromarray(mask).save(tmp_path / "masks" / "y.png")
    samples = {s.id: s for s in read_dataset(tmp_path, "classes")}
    for kind in ("scratch", "dent"):
        assert samples[f"NG/{kind}/x"].mask_path == tmp_path / "masks" / kind / "x.png"
    assert samples["NG/scratch/y"].mask_path == tmp_path / "masks" / "y.png"
    assert samples["NG/d1"].mask_path == tmp_path / "masks" / "d1.png"
