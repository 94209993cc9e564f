"""``psicbatch report --mask-images``: a results file's masks as PNG files, safely."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as coco_mask

from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.paths import readable_path, row_file
from psicbatch.run import mask_images
from psicbatch.run.mask_images import MASK_INDEX, MASK_RECORD, mask_names

NOT_UTF8 = os.fsdecode(b"part-\xff.png")  # a name from an old camera's share


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the demo model over images in two folders (one name twice, with two
    suffixes; one not UTF-8; one broken), every thresholded mask kept."""
    root = tmp_path_factory.mktemp("masks")
    generate(root / "data", 10, (128, 128), defect_rate=0.8, seed=5)
    images = sorted((root / "data" / "images").glob("*.png"))
    (root / "line" / "a").mkdir(parents=True)
    (root / "line" / "b").mkdir()
    for index, image in enumerate(images):
        shutil.copy(image, root / "line" / ("a" if index % 2 else "b") / image.name)
    Image.open(images[0]).save(root / "line" / "b" / images[0].with_suffix(".bmp").name)
    shutil.copy(images[1], root / "line" / "a" / NOT_UTF8)
    (root / "line" / "a" / "broken.png").write_text("not an image")
    out = root / "results.parquet"
    fast = ["-q", "--decoder", "pil", "--device", "cpu", "--masks", "all", "--allow-errors"]
    run = CliRunner().invoke(main, ["run", str(root / "line"), "--out", str(out), *fast])
    assert run.exit_code == 0, run.output
    return out


def _export(results: Path, folder: Path, *more: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["report", str(results), "--mask-images", str(folder), *more])
    return result.exit_code, result.output


def _written(folder: Path) -> set[bytes]:
    """Every file under ``folder``, as bytes relative to it."""
    return {os.fsencode(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def test_every_non_empty_mask_becomes_a_png_equal_to_its_rle(results: Path, tmp_path: Path) -> None:
    folder = tmp_path / "masks"
    code, output = _export(results, folder)
    assert code == 0, output
    rows = pq.read_table(results).to_pylist()
    masked = [row for row in rows if row["error"] is None and row["mask_area"] > 0]
    assert 0 < len(masked) < len(rows) - 1  # some masks, some empty ones and an error
    assert f"{len(masked)} masks (1-bit PNG) of {len(rows)} images" in output
    assert not (tmp_path / "report.html").exists() and "report.html" not in output
    with open(folder / MASK_INDEX, newline="", encoding="utf-8") as handle:
        index = list(csv.DictReader(handle))
    assert [row["path"] for row in index] == [row["path"] for row in masked]
    every_name = mask_names([row_file(row) for row in rows])
    names = dict(zip((row["path"] for row in rows), map(Path, every_name), strict=True))
    for row, listed in zip(masked, index, strict=True):
        name = names[row["path"]]
        assert listed["mask_image"] == readable_path(name)
        assert name.parts[0] in ("a", "b")  # as the inputs' folders
        picture = Image.open(folder / name)
        assert picture.mode == "1" and picture.size == (row["width"], row["height"])
        expected = coco_mask.decode({**row["mask"], "counts": row["mask"]["counts"].encode()})
        assert np.array_equal(np.array(picture), expected.astype(bool))
        assert int(listed["mask_area"]) == row["mask_area"] == expected.sum()
    record = json.loads((folder / MASK_RECORD).read_text())
    assert record["complete"] and record["masks"] == len(masked)
    assert record["run"]["masks"] == "all" and record["run"]["checkpoint_sha256"]
    names = {os.fsencode(name) for name in record["files"]}
    assert _written(folder) == names | {MASK_INDEX.encode(), MASK_RECORD.encode()}
    assert any(b"\xff" in name for name in names)  # the exact name, not U+FFFD


def test_mask_names_mirror_the_inputs_and_never_collide() -> None:
    files = [Path(p) for p in ("/l/a/x.jpg", "/l/a/x.bmp", "/l/b/x.jpg", "/l/b/y.tif")]
    assert mask_names(files) == ["a/x.jpg.png", "a/x.bmp.png", "b/x.png", "b/y.png"]
    assert mask_names([Path("/l/a/x.jpg")]) == ["x.png"]
    assert mask_names([Path("/x.jpg"), Path("/y/z.png")]) == ["x.png", "y/z.png"]
    taken = [Path(p) for p in ("/l/x.png", "/l/x.jpg", "/l/x.png.png", "/l/x.png")]
    names = mask_names(taken)
    assert len(set(names)) == len(names) == 4


def test_a_folder_of_other_files_is_refused_and_left_untouched(
    results: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    code, output = _export(results, folder)
    assert code == 1 and "not an earlier psicbatch mask export" in output
    assert len(output.strip().splitlines()) == 1
    assert _written(folder) == {b"notes.txt"}


def test_an_earlier_export_is_replaced_only_with_overwrite_and_only_its_own_files(
    results: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "masks"
    assert _export(results, folder)[0] == 0
    first = _written(folder)
    code, output = _export(results, folder)
    assert code == 1 and "pass --overwrite" in output
    stale = folder / "a" / "gone.png"  # a mask of an earlier run's image, now without one
    Image.new("1", (4, 4)).save(stale)
    record = json.loads((folder / MASK_RECORD).read_text())
    record["files"].append("a/gone.png")
    (folder / MASK_RECORD).write_text(json.dumps(record))
    (folder / "a" / "mine.txt").write_text("a user's file")
    assert _export(results, folder, "--overwrite")[0] == 0
    assert not stale.exists() and (folder / "a" / "mine.txt").read_text() == "a user's file"
    assert _written(folder) == first | {b"a/mine.txt"}


def test_a_file_the_export_did_not_write_is_never_replaced(results: Path, tmp_path: Path) -> None:
    folder = tmp_path / "masks"
    assert _export(results, folder)[0] == 0
    record = json.loads((folder / MASK_RECORD).read_text())
    target = folder / record["files"][0]
    record["files"] = record["files"][1:]  # as if an earlier export had not written it
    (folder / MASK_RECORD).write_text(json.dumps(record))
    target.write_bytes(b"someone else's")
    before = {name: (folder / os.fsdecode(name)).stat().st_mtime_ns for name in _written(folder)}
    code, output = _export(results, folder, "--overwrite")
    assert code == 1 and "was not written by a psicbatch mask export" in output
    assert target.read_bytes() == b"someone else's"
    after = {name: (folder / os.fsdecode(name)).stat().st_mtime_ns for name in _written(folder)}
    assert after == before  # refused before anything was written


def test_an_interrupted_export_is_recorded_and_finished_by_a_rerun(
    results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "masks"
    written = []
    real_write = mask_images._write_mask

    def write_then_stop(path: Path, mask: np.ndarray) -> None:
        if written:
            raise KeyboardInterrupt
        real_write(path, mask)
        written.append(path)

    monkeypatch.setattr(mask_images, "_write_mask", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        mask_images.write_mask_images(results, folder, overwrite=False, quiet=True)
    record = json.loads((folder / MASK_RECORD).read_text())
    assert not record["complete"] and len(record["files"]) > 1
    assert _written(folder) == {MASK_RECORD.encode(), os.fsencode(written[0].relative_to(folder))}
    monkeypatch.setattr(mask_images, "_write_mask", real_write)
    assert _export(results, folder, "--overwrite")[0] == 0
    assert json.loads((folder / MASK_RECORD).read_text())["complete"]


def test_a_damaged_mask_stops_the_export_in_one_line(results: Path, tmp_path: Path) -> None:
    """A results file edited by hand may hold an RLE that decodes to another size."""
    table = pq.read_table(results)
    rows = table.to_pylist()
    first = next(row for row in rows if row["error"] is None and row["mask_area"] > 0)
    first["mask"] = {"size": [3, 3], "counts": first["mask"]["counts"]}
    edited = tmp_path / "edited.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), edited)
    code, output = _export(edited, tmp_path / "masks")
    assert code == 1 and "Traceback" not in output, output
    last = output.strip().splitlines()[-1]  # below the progress bar, as far as it got
    assert last.startswith("Error: ") and "cannot be decoded (RLE covers" in last
    assert not json.loads((tmp_path / "masks" / MASK_RECORD).read_text())["complete"]
    page = tmp_path / "r.html"  # the page shows that image without its picture instead
    shown = CliRunner().invoke(main, ["report", str(edited), "--html", str(page), "--top", "99"])
    assert shown.exit_code == 0, shown.output
    assert "(image unreadable)" in page.read_text()


def test_images_named_near_the_file_name_limit_get_their_masks(tmp_path: Path) -> None:
    """A file name holds at most 255 bytes: the temporary name a mask is written under
    must not pass it where the mask's own name does not."""
    generate(tmp_path / "data", 4, (128, 128), defect_rate=1.0, seed=5)
    (tmp_path / "line").mkdir()
    for index, image in enumerate(sorted((tmp_path / "data" / "images").glob("*.png"))):
        shutil.copy(image, tmp_path / "line" / f"{'p' * 250}{index}.png")
    out = tmp_path / "results.parquet"
    fast = ["-q", "--decoder", "pil", "--device", "cpu", "--masks", "all"]
    run = CliRunner().invoke(main, ["run", str(tmp_path / "line"), "--out", str(out), *fast])
    assert run.exit_code == 0, run.output
    code, output = _export(out, tmp_path / "masks")
    assert code == 0, output
    rows = pq.read_table(out, columns=["path", "mask_area"]).to_pylist()
    masked = {Path(row["path"]).name.encode() for row in rows if row["mask_area"]}
    assert masked and _written(tmp_path / "masks") == {b"masks.csv", b"masks.json", *masked}
