"""The results writer: whatever rows go in come back out, in input order, with metadata."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from psicbatch.run import output, rle
from psicbatch.run.output import (
    BackgroundWriter,
    PartWriter,
    finalize,
    parts_directory,
    read_metadata,
)
from tests.reference_rows import bbox


@st.composite
def result_rows(draw: st.DrawFn) -> dict:
    path = draw(st.text(min_size=1, max_size=30).filter(lambda t: "\x00" not in t))
    named = {"path": path, "path_bytes": path.encode()}
    if draw(st.booleans()):
        return {**named, "error": draw(st.text(min_size=1, max_size=40))}
    mask = draw(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
    probability = draw(st.floats(0, 1, width=32))
    return {
        **named,
        "width": mask.shape[1],
        "height": mask.shape[0],
        "probability": probability,
        "is_defect": probability >= 0.5,
        "mask": rle.encode(mask),
        "mask_area": int(mask.sum()),
        "mask_bbox": bbox(mask),
        "seg_max": draw(st.floats(0, 1, width=32)),
        "error": None,
    }


@settings(max_examples=40, deadline=None)
@given(st.lists(result_rows(), min_size=1, max_size=25), st.integers(1, 6))
def test_rows_round_trip_through_parts_and_final_file(rows: list[dict], part_size: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "results.parquet"
        parts_directory(out).mkdir()  # as ResultsOutput makes it
        writer = PartWriter(out)
        indexed = [{**row, "input_index": i, "input_key": b"/%d" % i} for i, row in enumerate(rows)]
        for start in range(0, len(indexed), part_size):
            writer.write(indexed[start : start + part_size])
        finalize(out, {"schema_version": 1, "note": "round trip"})
        back = pq.read_table(out).to_pylist()
        assert not parts_directory(out).exists()
        assert read_metadata(out)["note"] == "round trip"
        assert pq.ParquetFile(out).metadata.num_row_groups == -(-len(rows) // part_size)
    assert len(back) == len(rows)
    for written, read in zip(rows, back, strict=True):
        for key, value in written.items():
            if isinstance(value, float):
                assert read[key] == np.float32(value)
            else:
                assert read[key] == value, key
        if written.get("mask"):
            assert np.array_equal(rle.decode(read["mask"]), rle.decode(written["mask"]))


def _inspect_fixture_images(folder: Path) -> Path:
    """A run over one small defect-free-looking image and one broken file."""
    from click.testing import CliRunner
    from PIL import Image

    from psicbatch.cli import main

    folder.mkdir()
    Image.fromarray(np.full((40, 56), 120, np.uint8)).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"not a png")
    out = folder.parent / "results.parquet"
    fp32_on_cpu = ["--decoder", "pil", "--device", "cpu", "--precision", "fp32"]
    result = CliRunner().invoke(main, ["run", str(folder), "--out", str(out), *fp32_on_cpu])
    assert result.exit_code == 3, result.output  # one image failed
    return out


def test_results_keep_the_schema_written_before_rows_were_typed(tmp_path: Path) -> None:
    """tests/data/results-schema-2.parquet was written by `psicbatch run` (same two inputs)
    before result rows became a dataclass: the columns, their types, nullability and
    order are unchanged; schema 3 only adds the tiled models' ``tile`` after them, and
    schema 4 the size and modification time of the file read, after that."""
    before = Path(__file__).parent / "data" / "results-schema-2.parquet"
    after = _inspect_fixture_images(tmp_path / "images")
    old_schema, new_schema = (pq.read_schema(p).remove_metadata() for p in (before, after))
    added = ["tile", "file_size", "file_mtime_ns"]
    assert new_schema.names[-3:] == added  # after every older column
    for name in added:
        new_schema = new_schema.remove(new_schema.get_field_index(name))
    assert new_schema.equals(old_schema)
    assert read_metadata(before)["schema_version"] == 2
    assert read_metadata(after)["schema_version"] == 4
    sizes = pq.read_table(after).column("file_size").to_pylist()
    assert sizes[0] == (tmp_path / "images" / "a.png").stat().st_size  # the file read
    old, new = pq.read_table(before).to_pylist(), pq.read_table(after).to_pylist()
    for old_row, new_row in zip(old, new, strict=True):
        assert (old_row["error"] is None) == (new_row["error"] is None)
        for column in ("width", "height", "is_defect", "mask", "mask_area", "mask_bbox"):
            assert old_row[column] == new_row[column]


def test_parts_written_before_the_tile_column_finish_with_nulls(tmp_path: Path) -> None:
    """Resuming an older psicbatch's parts: the results file gets today's schema."""
    import pyarrow as pa

    from psicbatch.run.output import PART_SCHEMA

    out = tmp_path / "results.parquet"
    parts_directory(out).mkdir()
    older = PART_SCHEMA.remove(PART_SCHEMA.get_field_index("tile"))
    row = {"path": "a.png", "path_bytes": b"a.png", "input_index": 0, "input_key": b"/a.png"}
    pq.write_table(
        pa.Table.from_pylist([row], schema=older), parts_directory(out) / "part-00000000.parquet"
    )
    assert finalize(out, {"schema_version": 3}) == 1
    (back,) = pq.read_table(out).to_pylist()
    assert back["path"] == "a.png" and back["tile"] is None


class _StallingWriter:
    """Its first write waits for ``answered``, as one into a share that stopped answering."""

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.written: list[list[dict]] = []

    def write(self, rows: list[dict]) -> None:
        if not self.written:
            self.answered.wait(60)
        self.written.append(rows)


def test_a_writer_that_does_not_answer_is_told_and_a_stop_does_not_wait_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wait on the writer (its queue full, its closing) waited without a word, and for
    ever once the run was stopped."""
    monkeypatch.setattr(output, "SILENT_SECONDS", 0.2)
    monkeypatch.setattr(output, "PATIENCE", 0.02)
    stalling = _StallingWriter()
    writer = BackgroundWriter(stalling)  # type: ignore[arg-type]
    told: list[float | None] = []
    batches = [[{"row": number}] for number in range(4)]
    for rows in batches[:3]:  # the first is being written, two wait in the queue
        assert writer.write(rows, told.append)
    assert not writer.write(batches[3], told.append, patient=False)
    assert told and told[-1] is not None and told[-1] >= 0.2
    assert not writer.close(patient=False)
    stalling.answered.set()
    assert writer.close(told.append)
    assert stalling.written == batches[:3]
