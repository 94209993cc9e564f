"""A watch's finished hours merged into one part each, safely across a stop at any point."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from psicbatch.data.synth import generate
from psicbatch.errors import PsicbatchError
from psicbatch.run import compaction
from psicbatch.run.compaction import Compactor, compact, merge
from psicbatch.run.output import write_part
from tests.test_watch import rows, start_watch, wait_for


def hour_folder(out: Path, hour: int) -> Path:
    folder = out / "date=2026-12-04" / f"hour={hour:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def later(out: Path) -> Path:
    """An hour after every hour these tests write: the one being written."""
    return out / "date=2026-12-05" / "hour=00"


def write_parts(folder: Path, first: int, count: int) -> list[Path]:
    """One-row parts numbered from ``first``, named as a watch names them (by time)."""
    parts = []
    for number in range(first, first + count):
        parts.append(folder / f"part-20261204T0900{number:02d}000000-1.parquet")
        write_part(pa.table({"number": [number]}), parts[-1])
    return parts


def numbers(folder: Path) -> list[int]:
    return [n for part in sorted(folder.glob("part-*.parquet"))
            for n in pq.read_table(part)["number"].to_pylist()]  # fmt: skip


def test_finished_hours_become_one_part_each_and_the_current_hour_is_left(tmp_path: Path) -> None:
    finished, current = hour_folder(tmp_path, 9), hour_folder(tmp_path, 10)
    write_parts(finished, 0, 5)
    write_parts(current, 5, 3)
    following = hour_folder(tmp_path, 11)  # begun since the merge was asked for: left too
    write_parts(following, 8, 2)
    (following / ".part-20261204T110002000000-1.parquet.tmp").write_bytes(b"being written")
    (finished / ".part-20261204T090009000000-1.parquet.tmp").write_bytes(
        b"half"
    )  # a killed process's
    assert compact(tmp_path, current) == 1
    (merged,) = finished.iterdir()
    assert merged.name.startswith("part-2026-12-04T09-merged-")
    assert numbers(finished) == [0, 1, 2, 3, 4]
    assert len(list(current.glob("part-*.parquet"))) == 3
    assert len(list(following.iterdir())) == 3
    assert compact(tmp_path, current) == 0  # nothing more to merge


def test_parts_left_beside_their_merged_file_are_removed_first(tmp_path: Path) -> None:
    """Stopped after the merged file appeared, before its parts were removed."""
    hour = hour_folder(tmp_path, 9)
    parts = write_parts(hour, 0, 3)
    kept = {part: part.read_bytes() for part in parts}
    merge(hour, parts)
    for part, data in kept.items():
        part.write_bytes(data)  # as if never removed
    compact(tmp_path, later(tmp_path))
    assert numbers(hour) == [0, 1, 2] and len(list(hour.iterdir())) == 1


def test_an_hour_merged_before_is_merged_again_with_its_new_parts(tmp_path: Path) -> None:
    """Parts written into an hour already merged (a clock set back) join its merged file."""
    hour = hour_folder(tmp_path, 9)
    merge(hour, write_parts(hour, 0, 2))
    write_parts(hour, 2, 2)
    compact(tmp_path, later(tmp_path))
    assert numbers(hour) == [0, 1, 2, 3] and len(list(hour.iterdir())) == 1


def test_a_failed_merge_stops_the_watch_at_its_next_hour(tmp_path: Path) -> None:
    hour = hour_folder(tmp_path, 9)
    (hour / "part-2026-12-04T09-merged-1-1.parquet").write_bytes(b"not parquet")
    compactor = Compactor(tmp_path, later(tmp_path))
    compactor.start()
    assert compactor.thread is not None
    compactor.thread.join(timeout=30)
    with pytest.raises(PsicbatchError, match=r"merged-1-1\.parquet: cannot be read"):
        compactor.start()


def test_the_first_part_of_a_new_hour_merges_the_hour_before(tmp_path: Path) -> None:
    nine, ten = hour_folder(tmp_path, 9), hour_folder(tmp_path, 10)
    compactor = Compactor(tmp_path, nine)
    for part in write_parts(nine, 0, 3):
        compactor.part_written(part)  # the same hour: nothing to merge
    assert compactor.thread is None
    (first_of_ten,) = write_parts(ten, 3, 1)
    compactor.part_written(first_of_ten)
    assert compactor.thread is not None
    compactor.thread.join(timeout=30)
    assert len(list(nine.iterdir())) == 1 and numbers(nine) == [0, 1, 2]
    assert numbers(ten) == [3]


def test_a_restarted_watch_merges_the_hours_before_and_inspects_nothing_twice(
    tmp_path: Path,
) -> None:
    images = generate(tmp_path / "made", 3, (64, 64), seed=4)
    folder, out = tmp_path / "line", tmp_path / "results"
    folder.mkdir()
    options = ("--marker", ".done", "--precision", "fp32")
    first = start_watch(folder, out, *options)
    for index, image in enumerate(images[:2]):  # one part each
        (folder / f"{index}.png").write_bytes(image.read_bytes())
        (folder / f"{index}.png.done").touch()
        wait_for(lambda count=index + 1: len(rows(out)) == count, first)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    (hour,) = out.glob("date=*/hour=*")
    earlier = out / "date=2020-01-01" / "hour=00"  # as if written long ago
    earlier.parent.mkdir()
    hour.rename(earlier)
    assert len(list(earlier.glob("part-*.parquet"))) == 2
    second = start_watch(folder, out, *options)
    wait_for(lambda: len(list(earlier.glob("part-*.parquet"))) == 1, second)
    (folder / "2.png").write_bytes(images[2].read_bytes())
    (folder / "2.png.done").touch()
    wait_for(lambda: len(rows(out)) == 3, second)
    time.sleep(0.5)  # nothing more comes: no file twice
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=30)
    assert sorted(Path(row["path"]).name for row in rows(out)) == ["0.png", "1.png", "2.png"]
    assert "2020-01-01" in {row["date"] for row in rows(out)}


def test_a_merge_writes_a_row_group_every_few_thousand_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory follows a row group, not the hour."""
    monkeypatch.setattr(compaction, "ROWS_PER_GROUP", 2)
    hour = hour_folder(tmp_path, 9)
    merged = merge(hour, write_parts(hour, 0, 5))
    assert merged is not None and numbers(hour) == [0, 1, 2, 3, 4]
    metadata = pq.read_metadata(merged)
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [2, 2, 1]


def test_an_hour_whose_parts_have_other_columns_is_left_as_it_is(tmp_path: Path) -> None:
    """Parts of two psicbatch versions within an hour are not merged, nor lost."""
    hour = hour_folder(tmp_path, 9)
    parts = write_parts(hour, 0, 2)
    write_part(
        pa.table({"number": [2], "new_column": ["x"]}),
        hour / "part-20261204T090002000000-1.parquet",
    )
    assert compact(tmp_path, later(tmp_path)) == 0
    assert sorted(hour.iterdir()) == sorted([*parts, hour / "part-20261204T090002000000-1.parquet"])
