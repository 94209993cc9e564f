"""The results table: schema, crash-safe incremental writing, resume, atomic completion.

``ResultsOutput`` drives the steps below for a run, in order.

While a run is going, results are written in input order as numbered part files in
``OUT.parts/``; each part appears atomically (temporary name, then rename), so a killed
run leaves only complete parts. ``--resume`` skips every path already in a part. At the
end the parts are streamed, one row group each, into ``OUT`` under a temporary name that
is then renamed, so ``OUT`` exists only when complete. ``OUT.lock`` (an OS file lock, freed
even when the process is killed) keeps two runs from writing the same output.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from psicbatch.errors import PsicbatchError
from psicbatch.run.files import FileStamp, current_stamp

SCHEMA_VERSION = 1
METADATA_KEY = b"psicbatch"
INDEX_COLUMN = "input_index"  # only in part files: the position in the input list

SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("probability", pa.float32()),
        pa.field("is_defect", pa.bool_()),
        pa.field("mask", pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])),
        pa.field("mask_area", pa.int64()),
        pa.field(
            "mask_bbox",
            pa.struct([("x", pa.int32()), ("y", pa.int32()), ("w", pa.int32()), ("h", pa.int32())]),
        ),
        pa.field("seg_max", pa.float32()),
        pa.field("error", pa.string()),
    ]
)
# Part files also record which version of each file was read, for --resume.
STAMP_COLUMNS = ("file_size", "file_mtime_ns")
PART_SCHEMA = pa.schema(
    [
        *SCHEMA,
        pa.field(INDEX_COLUMN, pa.int64(), nullable=False),
        *(pa.field(name, pa.int64()) for name in STAMP_COLUMNS),
    ]
)
PART_ONLY = [INDEX_COLUMN, *STAMP_COLUMNS]


def parts_directory(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


class OutputLock:
    """Exclusive, non-blocking lock on ``OUT.lock`` for the duration of a run."""

    def __init__(self, out: Path) -> None:
        self.path = out.with_name(out.name + ".lock")
        self.handle: Any = None

    def __enter__(self) -> OutputLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a+")  # held open for the lock's lifetime
        except OSError as error:
            raise PsicbatchError(
                f"{self.path.parent}: cannot write the output there ({error.strerror or error})"
            ) from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise PsicbatchError(
                f"{self.path.with_suffix('')}: another psicbatch run is writing this output "
                f"(lock {self.path}); wait for it or choose another --out"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{os.getpid()}\n")
        self.handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class PartWriter:
    """Writes rows as numbered part files, each appearing atomically."""

    def __init__(self, out: Path) -> None:
        self.directory = parts_directory(out)
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.directory.glob("part-*.parquet"))
        self.next_number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        name = f"part-{self.next_number:08d}.parquet"
        try:
            _write_part(pa.Table.from_pylist(rows, schema=PART_SCHEMA), self.directory / name)
        except OSError as error:
            raise PsicbatchError(
                f"{self.directory}: cannot write results ({error.strerror or error}); the run "
                "can be continued with --resume once the problem is fixed"
            ) from None
        self.next_number += 1


def _write_part(table: pa.Table, path: Path) -> None:
    """A part appears whole or not at all: written under a temporary name (which
    ``remove_stale_temporaries`` knows), then renamed."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class BackgroundWriter:
    """Writes part files in a thread of its own, so compressing and writing row groups runs
    beside the workers; a write error is raised on the next ``write`` or at ``close``."""

    def __init__(self, writer: PartWriter, depth: int = 2) -> None:
        self.writer = writer
        self.seconds = 0.0  # spent writing, for the run's stage times
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="psicbatch-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (rows := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain after a failure; the error is reported to the caller
            began = time.perf_counter()
            try:
                self.writer.write(rows)
            except BaseException as error:
                self.error = error
            self.seconds += time.perf_counter() - began

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._raise()
        if rows:
            self.queue.put(rows)

    def close(self) -> None:
        """Wait until every row is written."""
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


class ResultsOutput:
    """The results file's whole life in one place: lock it, know which inputs an
    interrupted run already did, write rows in the background, and finish the file.

    ``with ResultsOutput(out, resume) as output: output.write(rows); output.finish(meta)``.
    Leaving the block without ``finish`` (an error, a kill) keeps every row written so far
    in ``OUT.parts/`` for ``--resume``.
    """

    def __init__(self, out: Path, resume: bool) -> None:
        self.out = out
        self.resume = resume
        self.lock = OutputLock(out)
        self.done: set[str] = set()  # input paths already in the parts (resume)
        self.recomputed = 0  # rows of the interrupted run computed again
        self.writer: BackgroundWriter | None = None

    def __enter__(self) -> ResultsOutput:
        self.lock.__enter__()
        try:
            parts = parts_directory(self.out)
            if parts.exists() and not self.resume:
                raise PsicbatchError(
                    f"{self.out}: an interrupted run left results in {parts}; continue it "
                    "with --resume, or delete that folder to start over"
                )
            if self.resume:
                remove_stale_temporaries(self.out)
                self.done, self.recomputed = _unchanged(self.out)
            self.writer = BackgroundWriter(PartWriter(self.out))
        except BaseException:
            self.lock.__exit__()
            raise
        return self

    @property
    def write_seconds(self) -> float:
        return self.writer.seconds

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.writer.write(rows)

    def finish(self, metadata: dict[str, Any]) -> None:
        """Wait for every row, then assemble ``OUT`` atomically from the parts."""
        self.writer.close()
        finalize(self.out, metadata)

    def __exit__(self, *exc: object) -> None:
        try:
            if self.writer is not None and self.writer.thread.is_alive():
                self.writer.close()  # rows handed over are saved even when the run stops
        finally:
            self.lock.__exit__()


def _unchanged(out: Path) -> tuple[set[str], int]:
    """Paths of an interrupted run whose rows still hold, and how many rows were dropped
    to be computed again: those whose file is not as it was when read (changed, gone,
    or readable now where it was not)."""
    recorded = completed_stamps(out)
    stale = {path for path, stamp in recorded.items() if current_stamp(Path(path)) != stamp}
    if stale:
        drop_rows(out, stale)
    return set(recorded) - stale, len(stale)


def remove_stale_temporaries(out: Path) -> None:
    """Half-written files of a killed run (never mistaken for results: they are not parts)."""
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        stale.unlink(missing_ok=True)
    for stale in parts_directory(out).glob(".part-*.tmp"):
        stale.unlink(missing_ok=True)


def completed_stamps(out: Path) -> dict[str, FileStamp | None]:
    """Paths already in the part files of an interrupted run, each with the stamp of the
    file version it was computed from (None: the file could not be read then)."""
    directory = parts_directory(out)
    if not directory.is_dir():
        return {}
    done: dict[str, FileStamp | None] = {}
    for part in sorted(directory.glob("part-*.parquet")):
        if not set(STAMP_COLUMNS) <= set(pq.read_schema(part).names):  # older part files
            done.update(dict.fromkeys(_paths(part)))
            continue
        table = pq.read_table(part, columns=["path", *STAMP_COLUMNS])  # not the masks
        columns = (table.column(c).to_pylist() for c in ("path", *STAMP_COLUMNS))
        for path, size, mtime in zip(*columns, strict=True):
            done[path] = None if size is None else FileStamp(size, mtime)
    return done


def drop_rows(out: Path, paths: set[str]) -> None:
    """Remove the rows of ``paths`` from the part files (each part replaced atomically),
    so that they are computed again."""
    dropped = pa.array(sorted(paths), pa.string())
    for part in sorted(parts_directory(out).glob("part-*.parquet")):
        if not set(_paths(part)) & paths:
            continue  # only parts holding a dropped row are read whole and rewritten
        table = pq.read_table(part)
        kept = table.filter(pc.invert(pc.is_in(table.column("path"), dropped)))
        if kept.num_rows == 0:
            part.unlink()
        else:
            _write_part(kept, part)


def _paths(part: Path) -> list[str]:
    return pq.read_table(part, columns=["path"]).column("path").to_pylist()


def finalize(out: Path, metadata: dict[str, Any]) -> int:
    """Stream the parts into ``OUT`` (atomically), then remove them. Returns the row count."""
    directory = parts_directory(out)
    parts = sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []
    schema = SCHEMA.with_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    rows = 0
    try:
        with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
            for table in _in_input_order(parts):
                table = table.drop_columns([c for c in PART_ONLY if c in table.column_names])
                writer.write_table(table.cast(schema))
                rows += table.num_rows
        os.replace(temporary, out)
    except OSError as error:
        raise PsicbatchError(
            f"{out}: cannot write the results file ({error.strerror or error}); the computed "
            "results are kept and --resume finishes the file"
        ) from None
    finally:
        temporary.unlink(missing_ok=True)
    shutil.rmtree(directory, ignore_errors=True)
    return rows


def _in_input_order(parts: list[Path]) -> Iterator[pa.Table]:
    """The parts' rows in input order. Runs write parts in order, so each part is streamed
    alone; only after a resume recomputed some rows (their new part overlaps older ones'
    index ranges) are all parts read together and sorted."""
    ranges = {}
    for part in parts:
        index = pq.read_table(part, columns=[INDEX_COLUMN]).column(INDEX_COLUMN)
        ranges[part] = (pc.min(index).as_py(), pc.max(index).as_py())
    ordered = sorted(parts, key=lambda part: ranges[part])
    disjoint = all(ranges[a][1] < ranges[b][0] for a, b in itertools.pairwise(ordered))
    if disjoint:
        yield from (pq.read_table(part).sort_by(INDEX_COLUMN) for part in ordered)
    elif ordered:
        tables = [pq.read_table(part) for part in ordered]
        yield pa.concat_tables(tables, promote_options="default").sort_by(INDEX_COLUMN)


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``psicbatch`` JSON stored in a results file's key-value metadata."""
    raw = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in raw:
        raise PsicbatchError(
            f"{path}: not a psicbatch results file (no '{METADATA_KEY.decode()}' metadata)"
        )
    return json.loads(raw[METADATA_KEY])
