"""Which of a run's results are of labelled images: the files themselves, or copies."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from psicbatch.data.layouts import SampleRef
from psicbatch.run.labelled_results import result_rows


def _sample(path: Path) -> SampleRef:
    return SampleRef(str(path), path, None, False, path.parent.name)


def _table(paths: list[Path]) -> pa.Table:
    return pa.table({"path": [str(p) for p in paths], "probability": [0.5] * len(paths)})


def test_identical_images_in_two_folders_each_find_their_own_copy(tmp_path: Path) -> None:
    """KolektorSDD's kos26 holds kos01's images again, under the same names (every folder
    names its images Part0..Part7): a reviewed copy of kos26/Part0 is the line's
    kos26/Part0, not whichever file of that name and bytes came last."""
    labelled, line = tmp_path / "reviewed", tmp_path / "line"
    for root in (labelled, line):
        for folder in ("kos01", "kos26", "kos02"):
            (root / folder).mkdir(parents=True)
            image = b"same bytes" if folder != "kos02" else b"other bytes"
            (root / folder / "Part0.jpg").write_bytes(image)
    samples = [_sample(labelled / f / "Part0.jpg") for f in ("kos01", "kos26", "kos02")]
    inspected = [line / f / "Part0.jpg" for f in ("kos01", "kos26", "kos02")]
    found = result_rows(_table(inspected), samples, ("path",))
    paired = {s.group: Path(row["path"]).parent.name for s, row in found.pairs}
    assert paired == {"kos01": "kos01", "kos26": "kos26", "kos02": "kos02"}
    assert (found.copies, found.rows_of_labelled) == (3, 3)  # no image inspected twice
    # Inspected again: the last result of the same file counts, and is counted once more.
    again = result_rows(_table([*inspected, inspected[0]]), samples, ("path",))
    assert {s.group: Path(row["path"]).parent.name for s, row in again.pairs} == paired
    assert again.rows_of_labelled == 4
    # Copies elsewhere under other folder names: the same bytes, the same name, one file.
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "Part0.jpg").write_bytes(b"same bytes")
    alone = result_rows(_table([flat / "Part0.jpg"]), samples, ("path",))
    assert [s.group for s, _ in alone.pairs] == ["kos01", "kos26"]
    assert alone.rows_of_labelled == 1  # one result, of one file, for both copies


def test_copies_of_files_moved_away_are_known_by_name_and_recorded_size(tmp_path: Path) -> None:
    """A line moves its images away once inspected: the reviewed copy is then the file of
    its name whose size the watch recorded, never one of another size."""
    labelled, line = tmp_path / "reviewed", tmp_path / "line"
    for root in (labelled, line):
        for folder in ("kos01", "kos02"):
            (root / folder).mkdir(parents=True)
    (labelled / "kos01" / "Part0.jpg").write_bytes(b"twelve bytes")
    (labelled / "kos02" / "Part0.jpg").write_bytes(b"other size")
    inspected = [line / "kos01" / "Part0.jpg", line / "kos02" / "Part0.jpg"]
    table = _table(inspected).append_column("file_size", pa.array([12, 11], pa.int64()))
    samples = [_sample(labelled / f / "Part0.jpg") for f in ("kos01", "kos02")]
    found = result_rows(table, samples, ("path",))  # the inspected files are gone
    assert [(s.group, Path(row["path"]).parent.name) for s, row in found.pairs] == [
        ("kos01", "kos01")
    ]  # kos02's copy has 10 bytes, its inspected file had 11: another image
    assert (found.copies, found.by_size, found.rows_of_labelled) == (1, 1, 1)
    assert "1 of those known by name and size, the inspected files being gone" in (
        found.counts("scored")
    )
    # A file there again with the reviewed bytes is a version the watch never inspected
    # (it recorded 11 bytes of it): not matched. With the size it recorded, its bytes decide.
    (line / "kos02" / "Part0.jpg").write_bytes(b"other size")
    assert result_rows(table, samples, ("path",)).copies == 1
    recorded = table.set_column(2, "file_size", pa.array([12, 10], pa.int64()))
    found = result_rows(recorded, samples, ("path",))
    assert (found.copies, found.by_size) == (2, 1)  # kos02 by its bytes
