"""The results table: schema, crash-safe incremental writing, resume, atomic completion.

``ResultsOutput`` drives the steps below for a run, in order.

While a run is going, results are written in input order as numbered part files in
``OUT.parts/``, beside the job's identity (``_job.json``); each part appears atomically
(temporary name, then rename), so a killed run leaves only complete parts. ``--resume``
checks that it continues the same job and skips every input already in a part. At the
end the parts are streamed, one row group each, into ``OUT`` under a temporary name that
is then renamed (only over nothing or a psicbatch results file), so ``OUT`` exists only
when complete. ``OUT.lock`` (an OS file lock, freed even when the process is killed)
keeps two runs from writing the same output. A run that stops before it saved a row
leaves no ``OUT.parts``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from psicbatch.atomic import write_atomically
from psicbatch.errors import PsicbatchError
from psicbatch.output_lock import RELEASE_SECONDS, OutputLock
from psicbatch.paths import path_from_bytes, readable_path
from psicbatch.run.files import FileStamp, current_stamp
from psicbatch.run.folder_scan import SILENT_SECONDS
from psicbatch.run.job import JobIdentity, check_same_job
from psicbatch.run.limited import TimeLimitExceeded, call_limited
from psicbatch.run.output_guard import RESULTS, write_checked
from psicbatch.run.rows import SCHEMA
from psicbatch.run.waiting_calls import SilenceWatch, waited_for

SCHEMA_VERSION = 4  # 2: path_bytes; 3: tile; 4: file_size, file_mtime_ns
METADATA_KEY = b"psicbatch"
INDEX_COLUMN = "input_index"  # only in part files: the position in the input list
KEY_COLUMN = "input_key"  # only in part files: the input's absolute path, as bytes

# Which version of each file was read: a resume checks it, and an audit knows a reviewed
# copy of a file moved away since by its name and size.
STAMP_COLUMNS = ("file_size", "file_mtime_ns")
RESULTS_SCHEMA = pa.schema([*SCHEMA, *(pa.field(name, pa.int64()) for name in STAMP_COLUMNS)])
PART_SCHEMA = pa.schema(
    [
        *RESULTS_SCHEMA,
        pa.field(INDEX_COLUMN, pa.int64(), nullable=False),
        pa.field(KEY_COLUMN, pa.binary(), nullable=False),
    ]
)
PART_ONLY = [INDEX_COLUMN, KEY_COLUMN]

# Waits on the writer, or on opening the results, look again this often; a
# call that has not returned for SILENT_SECONDS (as long as a watch's scan) is waiting on
# a folder that does not answer.
PATIENCE = 0.5
Told = Callable[[float | None], None]  # how long the results folder has not answered
Assembled = Callable[[int, int], None]  # parts in the results file so far, of how many


def _unseen(done: int, total: int) -> None:
    """Nobody follows the assembly."""


def _untold(silent: float | None) -> None:
    """A wait on the writer that nobody is shown."""


def parts_directory(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


class PartWriter:
    """Writes rows as numbered part files, each appearing atomically."""

    def __init__(self, out: Path) -> None:
        self.directory = parts_directory(out)
        existing = sorted(self.directory.glob("part-*.parquet"))
        self.next_number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        name = f"part-{self.next_number:08d}.parquet"
        try:
            write_part(pa.Table.from_pylist(rows, schema=PART_SCHEMA), self.directory / name)
        except OSError as error:
            raise PsicbatchError(
                f"{self.directory}: cannot write results ({error.strerror or error}); the run "
                "can be continued with --resume once the problem is fixed"
            ) from None
        self.next_number += 1


def write_part(table: pa.Table, path: Path) -> None:
    """A part appears whole or not at all: written under a temporary name (which
    ``remove_stale_temporaries`` knows), then renamed."""
    write_atomically(
        path, lambda temporary: pq.write_table(table, temporary, compression="zstd"), ".tmp"
    )


def watch_part_files(out: Path) -> list[Path]:
    """Every part a watch wrote into ``out``, in the order of their names (hour by hour,
    the last written last)."""
    return sorted(out.glob("date=*/hour=*/part-*.parquet"))


def watch_tables(out: Path, columns: list[str]) -> Iterator[pa.Table]:
    """The ``columns`` of every part a watch wrote into ``out`` (``watch_part_files``);
    one line naming a part that cannot be read (damaged on disk): moved away, its files
    are inspected again."""
    for part in watch_part_files(out):
        try:
            yield pq.read_table(part, columns=columns)
        except (OSError, ValueError) as error:  # pyarrow's errors are ValueErrors too
            raise PsicbatchError(
                f"{readable_path(part)}: a part of the watch's results cannot be read "
                f"({error}); move it out of the folder to go on without it (its files are "
                "inspected again)"
            ) from None


class BackgroundWriter:
    """Writes part files in a thread of its own, so compressing and writing row groups runs
    beside the workers; a write error is raised on the next ``write`` or at ``close``.

    A share that stops answering holds the write under way in a system call: whoever
    waits on the writer (its queue full, or its closing) is told how long the write has
    waited, from SILENT_SECONDS on (``told``, None once it answers), and a wait that is not
    ``patient`` (a run that stops) gives up then, where it waited for ever."""

    def __init__(self, writer: PartWriter, depth: int = 2) -> None:
        self.writer = writer
        self.seconds = 0.0  # spent writing, for the run's stage times
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.began: float | None = None  # when the write under way began
        self.thread = threading.Thread(target=self._loop, name="psicbatch-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (rows := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain after a failure; the error is reported to the caller
            began = self.began = time.monotonic()
            try:
                self.writer.write(rows)
            except BaseException as error:
                self.error = error
            self.began = None
            self.seconds += time.monotonic() - began

    def silent_for(self) -> float | None:
        """How long the write under way has waited, from SILENT_SECONDS on; else None."""
        began = self.began
        waited = 0.0 if began is None else time.monotonic() - began
        return waited if waited >= SILENT_SECONDS else None

    def write(self, rows: list[dict[str, Any]], told: Told = _untold, patient: bool = True) -> bool:
        """Hand ``rows`` over; False where an impatient wait gave up on a writer that does
        not answer (the rows are not written)."""
        self._raise()
        return not rows or self._wait(partial(self._handed, rows), told, patient)

    def close(self, told: Told = _untold, patient: bool = True) -> bool:
        """Wait until every row is written: True; False where an impatient wait gave up."""
        if not self._wait(partial(self._handed, None), told, patient):
            return False
        if not self._wait(self._ended, told, patient):
            return False
        self._raise()
        return True

    def _ended(self) -> bool:
        self.thread.join(PATIENCE)
        return not self.thread.is_alive()

    def _handed(self, item: list[dict[str, Any]] | None) -> bool:
        try:
            self.queue.put(item, timeout=PATIENCE)
        except queue.Full:
            return False
        return True

    def _wait(self, done: Callable[[], bool], told: Told, patient: bool) -> bool:
        """``done()`` again until it is true, telling ``told`` how long the writer has not
        answered; an impatient wait gives up (False) once it has not for SILENT_SECONDS."""
        silent = None
        while not done():
            silent = self.silent_for()
            told(silent)
            if silent is not None and not patient:
                return False
        if silent is not None:
            told(None)
        return True

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


class ResultsOutput:
    """The results file's whole life in one place: lock it, check that a resume continues
    the same job and know which inputs it already did, write rows in the background, and
    finish the file.

    ``with ResultsOutput(out, job, keys, resume) as output: output.write(rows);
    output.finish(meta)``. Leaving the block without ``finish`` (an error, a kill, a
    signal) keeps every row written so far in ``OUT.parts/`` for ``--resume``. Opening
    works in the folder from a thread of its own (``waited_for``): a share that stops
    answering there is told of (``told``), and a stop still heard.
    """

    def __init__(
        self, out: Path, job: JobIdentity, keys: list[bytes], resume: bool, told: Told = _untold
    ) -> None:
        self.out = out
        self.job = job
        self.keys = keys  # input_key of every input, in input order
        self.resume = resume
        self.told = told
        self.lock = OutputLock(out, "run")
        self.done: set[bytes] = set()  # inputs already in the parts (resume)
        self.recomputed = 0  # rows of the interrupted run computed again
        self.dropped = 0  # rows of files no longer among the inputs
        self.writer: BackgroundWriter | None = None

    def __enter__(self) -> ResultsOutput:
        return waited_for(self._open, self.told, "psicbatch-results-open", PATIENCE, SILENT_SECONDS)

    def _open(self) -> ResultsOutput:
        self.lock.__enter__()
        parts = parts_directory(self.out)
        try:
            if _holds_no_rows(parts):  # of a run stopped before it saved any: nothing to resume
                shutil.rmtree(parts)
            if parts.exists() and not self.resume:
                raise PsicbatchError(
                    f"{readable_path(self.out)}: an interrupted run left results in "
                    f"{readable_path(parts)}; continue it with --resume, or delete that "
                    "folder to start over"
                )
            if parts.exists():
                check_same_job(parts, self.job)
                remove_stale_temporaries(self.out)
                self.done, self.recomputed, self.dropped = reconcile(self.out, self.keys)
            else:
                parts.mkdir()
                self.job.write(parts)
            self.writer = BackgroundWriter(PartWriter(self.out))
        except OSError as error:
            self._release()
            raise PsicbatchError(
                f"{readable_path(parts)}: cannot be written ({error.strerror or error})"
            ) from None
        except BaseException:
            self._release()
            raise
        return self

    @property
    def _open_writer(self) -> BackgroundWriter:
        if self.writer is None:
            raise RuntimeError("ResultsOutput is used outside its 'with' block")
        return self.writer

    @property
    def write_seconds(self) -> float:
        return self._open_writer.seconds

    def write(self, rows: list[dict[str, Any]], told: Told = _untold, patient: bool = True) -> None:
        self._open_writer.write(rows, told, patient)

    def finish(
        self, metadata: dict[str, Any], told: Told = _untold, assembled: Assembled = _unseen
    ) -> None:
        """Wait for every row, then assemble ``OUT`` atomically from the parts, telling
        ``assembled`` how many parts are in, and ``told`` how long the folder has not
        answered (a part that takes SILENT_SECONDS)."""
        self._open_writer.close(told)
        # Here, not in a thread that a stop would leave running: a stop mid-way keeps the
        # parts for --resume (OUT is written whole or not at all).
        with SilenceWatch(told, "psicbatch-assembly-watch", PATIENCE, SILENT_SECONDS) as watch:

            def part_in(done: int, total: int) -> None:
                watch.heard()
                assembled(done, total)

            finalize(self.out, metadata, part_in)

    def __exit__(self, *exc: object) -> None:
        try:
            if self.writer is not None and self.writer.thread.is_alive():
                # Rows handed over are saved even when the run stops, unless the folder
                # does not answer: a resume computes those again.
                self.writer.close(patient=False)
        finally:
            self._release()

    def _release(self) -> None:
        """Unlock; a run that saved no row leaves no parts folder to block the next one.
        Within RELEASE_SECONDS: a share that stopped answering would hold a stop for ever."""
        with contextlib.suppress(TimeLimitExceeded):
            call_limited(self._remove_empty_parts, RELEASE_SECONDS)
        self.lock.__exit__()

    def _remove_empty_parts(self) -> None:
        parts = parts_directory(self.out)
        if _holds_no_rows(parts):
            shutil.rmtree(parts, ignore_errors=True)


def reconcile(out: Path, keys: list[bytes]) -> tuple[set[bytes], int, int]:
    """Bring an interrupted run's parts up to the current inputs before resuming.

    Rows keep their place in the *current* input order (folders may have gained or lost
    files since). Rows of files no longer among the inputs are dropped; rows of files
    that changed since they were read (or vanished, or became readable) are dropped to
    be computed again. Only parts that change are rewritten. Returns the inputs still
    done, how many rows will be computed again, and how many were dropped for good.
    """
    position = {key: index for index, key in enumerate(keys)}
    done: set[bytes] = set()
    recomputed = dropped = 0
    for part in sorted(parts_directory(out).glob("part-*.parquet")):
        columns = [KEY_COLUMN, INDEX_COLUMN, *STAMP_COLUMNS]
        if not set(columns) <= set(pq.read_schema(part).names):
            raise PsicbatchError(
                f"{readable_path(part)}: written by an older psicbatch; delete "
                f"{readable_path(part.parent)} to start over"
            )
        table = pq.read_table(part, columns=columns)  # not the masks
        keep, indices = [], []
        for key, _, size, mtime in zip(
            *(table.column(c).to_pylist() for c in columns), strict=True
        ):
            if key not in position:
                dropped += 1
                keep.append(False)
                continue
            stamp = None if size is None else FileStamp(size, mtime)
            if current_stamp(path_from_bytes(key)) != stamp:
                recomputed += 1
                keep.append(False)
                continue
            keep.append(True)
            done.add(key)
            indices.append(position[key])
        if all(keep) and indices == table.column(INDEX_COLUMN).to_pylist():
            continue
        kept = pq.read_table(part).filter(pa.array(keep))
        if kept.num_rows == 0:
            part.unlink()
            continue
        column = kept.schema.get_field_index(INDEX_COLUMN)
        kept = kept.set_column(column, INDEX_COLUMN, pa.array(indices, pa.int64()))
        write_part(kept, part)
    return done, recomputed, dropped


def _holds_no_rows(parts: Path) -> bool:
    """``OUT.parts`` without a part: a run stopped before it saved a row leaves it so
    where it could not remove it (killed, or stopped as it made the folder, before its
    job record, written whole or not at all, was in it)."""
    return parts.is_dir() and not any(parts.glob("part-*.parquet"))


def remove_stale_temporaries(out: Path) -> None:
    """Half-written files of a killed run (never mistaken for results: they are not parts)."""
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        stale.unlink(missing_ok=True)
    for stale in parts_directory(out).glob(".part-*.tmp"):
        stale.unlink(missing_ok=True)


def finalize(out: Path, metadata: dict[str, Any], assembled: Assembled = _unseen) -> int:
    """Stream the parts into ``OUT`` (atomically), then remove them; ``assembled`` hears
    how many parts are in. Returns the row count."""
    directory = parts_directory(out)
    parts = sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []
    schema = RESULTS_SCHEMA.with_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    rows = 0
    assembled(0, len(parts))

    def write(temporary: Path) -> None:
        nonlocal rows
        with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
            for table, parts_in in _in_input_order(parts):
                table = table.drop_columns([c for c in PART_ONLY if c in table.column_names])
                writer.write_table(_as_schema(table, schema))
                rows += table.num_rows
                assembled(parts_in, len(parts))

    kept = "; the computed results are kept and --resume finishes the file"
    write_checked(out, RESULTS, write, kept)
    shutil.rmtree(directory, ignore_errors=True)
    return rows


def _as_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A part's rows in the results schema; columns added since the part was written
    (resuming an older psicbatch's parts) are nulls."""
    for name in schema.names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    return table.select(schema.names).cast(schema)


def _in_input_order(parts: list[Path]) -> Iterator[tuple[pa.Table, int]]:
    """The parts' rows in input order, each with how many parts they complete. Runs write
    parts in order, so each part is streamed alone; only after a resume recomputed some
    rows (their new part overlaps older ones' index ranges) are all parts read together
    and sorted."""
    ranges = {}
    for part in parts:
        index = pq.read_table(part, columns=[INDEX_COLUMN]).column(INDEX_COLUMN)
        ranges[part] = (pc.min(index).as_py(), pc.max(index).as_py())
    ordered = sorted(parts, key=lambda part: ranges[part])
    disjoint = all(ranges[a][1] < ranges[b][0] for a, b in itertools.pairwise(ordered))
    if disjoint:
        for number, part in enumerate(ordered, 1):
            yield pq.read_table(part).sort_by(INDEX_COLUMN), number
    elif ordered:
        tables = [pq.read_table(part) for part in ordered]
        yield pa.concat_tables(tables, promote_options="default").sort_by(INDEX_COLUMN), len(tables)


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``psicbatch`` JSON stored in a results file's key-value metadata."""
    try:
        raw = pq.read_schema(path).metadata or {}
    except OSError as error:
        raise PsicbatchError(f"{readable_path(path)}: cannot be read ({error})") from None
    except pa.ArrowInvalid:
        raise PsicbatchError(
            f"{readable_path(path)}: not a psicbatch results file (not a Parquet file)"
        ) from None
    if METADATA_KEY not in raw:
        raise PsicbatchError(
            f"{readable_path(path)}: not a psicbatch results file (no "
            f"'{METADATA_KEY.decode()}' metadata)"
        )
    return json.loads(raw[METADATA_KEY])
