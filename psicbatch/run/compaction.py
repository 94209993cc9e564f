"""A watch's finished hours, each merged into one part.

A watch writes a part per batch for latency: on a slow line, a part per image, tens of
thousands a day, which every reader (DuckDB, pyarrow, ``psicbatch report``) and the
watch's own restart must open one by one. Once an hour is over, its parts are merged
into one file, ``part-<hour>-merged-<time>.parquet``, which names the parts it holds in
its metadata; then they are removed. The merged file appears whole (written under a
temporary name, then renamed). A process stopped between the rename and the removals
leaves parts that the merged file also holds: the next pass removes them first, so rows
are duplicated on disk only for that moment. Merging runs in a thread of its own, beside
the inspection (3,600 one-row parts took 6 s on a 2-core Xeon), a row group at a time.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from psicbatch.atomic import write_atomically
from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path

MERGED_FROM = b"psicbatch.merged_from"  # the merged file's metadata: the parts it holds
ROWS_PER_GROUP = 65_536  # rows read before a row group is written


def finished_hours(out: Path, current: Path) -> list[Path]:
    """The hour folders of ``out`` before ``current`` (the hour being written). Not the
    ones after it: the watch may have begun writing the next hour since ``current`` was
    taken, and a part being written there must not be touched."""
    return sorted(
        hour for hour in out.glob("date=*/hour=*") if _when(hour) < _when(current) and hour.is_dir()
    )


def _when(hour: Path) -> tuple[str, str]:
    """An hour folder's place in time: ``date=YYYY-MM-DD``, ``hour=HH`` sort as times do."""
    return hour.parent.name, hour.name


def compact(out: Path, current: Path) -> int:
    """Merge every finished hour's parts into one; the number of hours merged."""
    merged = 0
    for hour in finished_hours(out, current):
        remove_merged_parts(hour)
        for stale in hour.glob(".part-*.tmp"):  # a killed process's half-written part
            stale.unlink(missing_ok=True)
        parts = sorted(hour.glob("part-*.parquet"))
        if len(parts) > 1 and merge(hour, parts) is not None:
            merged += 1
    return merged


def merge(hour: Path, parts: list[Path]) -> Path | None:
    """One part holding ``parts``' rows, in order, then ``parts`` removed. Read and
    written a row group at a time: a busy line's hour is hundreds of thousands of rows.
    None, and nothing changed, where the parts' columns differ (an upgrade of psicbatch
    within the hour): they are left as they are."""
    columns = pq.read_schema(parts[0]).remove_metadata()
    metadata = {MERGED_FROM: json.dumps([part.name for part in parts]).encode()}

    def write(temporary: Path) -> None:
        schema = columns.with_metadata(metadata)
        with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
            group: list[pa.Table] = []
            rows = 0
            for part in parts:
                table = pq.read_table(part).replace_schema_metadata(None)
                if not table.schema.equals(columns):
                    raise DifferentColumns(part)
                group.append(table)
                rows += table.num_rows
                if rows >= ROWS_PER_GROUP:
                    writer.write_table(pa.concat_tables(group))
                    group, rows = [], 0
            if group:
                writer.write_table(pa.concat_tables(group))

    date, hour_of_day = hour.parent.name.removeprefix("date="), hour.name.removeprefix("hour=")
    stamp = datetime.datetime.now(datetime.timezone.utc)
    name = f"part-{date}T{hour_of_day}-merged-{stamp:%Y%m%dT%H%M%S%f}-{os.getpid()}.parquet"
    path = hour / name
    try:
        write_atomically(path, write, ".tmp")  # the temporary name compact() cleans up
    except DifferentColumns:
        return None
    for part in parts:
        part.unlink(missing_ok=True)
    return path


class DifferentColumns(Exception):
    """A part whose columns differ from the first part's of its hour."""


def remove_merged_parts(hour: Path) -> None:
    """Parts that a merged file of ``hour`` already holds: left by a process stopped
    between writing the merged file and removing them."""
    for merged in hour.glob("part-*-merged-*.parquet"):
        try:
            metadata = pq.read_schema(merged).metadata or {}
        except (OSError, ValueError) as error:  # pyarrow's errors are ValueErrors too
            raise PsicbatchError(f"{readable_path(merged)}: cannot be read ({error})") from None
        for name in json.loads(metadata.get(MERGED_FROM, b"[]")):
            (hour / name).unlink(missing_ok=True)


class Compactor:
    """Merges a watch's finished hours in the background, one pass at a time; an error
    of a pass is raised by the next ``start`` (so the watch stops with it)."""

    def __init__(self, out: Path, current: Path) -> None:
        self.out = out
        self.current = current  # the hour being written
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def part_written(self, part: Path) -> None:
        """The first part of a new hour finishes the hour before: merge it."""
        if part.parent != self.current:
            self.current = part.parent
            self.start()

    def start(self) -> None:
        """Merge every hour but the current one, unless a pass is still running (the
        next hour's start catches up)."""
        if self.error is not None:
            raise self.error
        if self.thread is not None and self.thread.is_alive():
            return
        self.thread = threading.Thread(
            target=self._run, args=(self.current,), name="psicbatch-compact", daemon=True
        )
        self.thread.start()

    def _run(self, current: Path) -> None:
        try:
            compact(self.out, current)
        except BaseException as error:  # raised in the watch's own thread by start()
            self.error = error
