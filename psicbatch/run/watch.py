"""``psicbatch run --watch``: inspect files as a line writes them, each version exactly once.

A file is complete when its size and modification time have not changed for
``settle_seconds`` (or, with a marker suffix, when ``NAME<suffix>`` exists). Complete
files go through the same worker as ``psicbatch run``, one batch at a time, and each
batch's rows become one Parquet part under ``OUT/date=YYYY-MM-DD/hour=HH/`` (UTC, the
time it was written): a hive-partitioned folder that pyarrow, DuckDB and polars read as
one dataset. A part appears whole or not at all, so the parts are the ledger: on start,
every (path, size, mtime) in them is done, whatever happened to the last process (a
SIGKILL loses only the batch in flight, which is inspected again). ``OUT/_watch.json``
records the job's identity (as ``--resume`` does), so a restart with another engine is
refused; ``OUT/_watch_run.json`` what a results file's metadata records (the engine with
the images its model learnt from, the decision file, the region), from the latest start,
for reports and audits. SIGINT/SIGTERM stop at once: a batch in flight is dropped, to be
inspected again; so is one that makes no progress for ``--batch-timeout`` seconds, after
which the watch stops with an error (exit code 1), for its service manager to restart
it. Each finished hour's parts are merged into one (``compaction``). With
``--group-by``, the parts a line passes or rejects (several images each) are decided as
their images come (``watch_parts``). The folder is scanned in a thread of its own: where
it stops answering (a network share), the status line and a note say so, parts that
waited long enough are still decided, and a signal still stops the watch. Each batch's
results are written in a thread of their own too: a results folder that stops answering
is said the same way, and a signal still stops the watch (the batch whose write waits is
inspected again at the next start).
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import wait as wait_for_future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from psicbatch.atomic import write_atomically
from psicbatch.devices import default_device
from psicbatch.engines.spec import EngineSpec
from psicbatch.errors import PsicbatchError
from psicbatch.output_lock import OutputLock
from psicbatch.paths import readable_path
from psicbatch.run.compaction import Compactor
from psicbatch.run.folder_scan import SILENT_SECONDS, FolderScan, Ledger
from psicbatch.run.heartbeat import TileProgress, Tiles
from psicbatch.run.job import (
    LATE_IMAGES_FILE,
    WATCH_JOB_FILE,
    WATCH_LOCK_FILE,
    WATCH_RUN_FILE,
    JobIdentity,
    check_same_job,
)
from psicbatch.run.options import RunOptions
from psicbatch.run.output import STAMP_COLUMNS, watch_tables, write_part
from psicbatch.run.output_guard import check_writable
from psicbatch.run.part_files import late_counts_said
from psicbatch.run.rows import SCHEMA
from psicbatch.run.run_decisions import check_decisions_fit
from psicbatch.run.runner import described_run, job_identity, run_record
from psicbatch.run.shutdown import raise_if_stopped
from psicbatch.run.waiting_calls import in_a_thread, waited_for
from psicbatch.run.watch_parts import LateImages, PartDecisions, WatchParts
from psicbatch.run.worker import Worker
from psicbatch.wording import counted, decisions_said

BATCH_LIMIT = 8  # files per part at most: latency before throughput on a line
SCAN_PATIENCE = 1.0  # seconds between looks at a scan or write under way (is it silent?)
STARTING = "the watch waits for it to start"  # what a wait before the first scan holds up
T = TypeVar("T")
WATCH_SCHEMA = pa.schema(
    [
        *SCHEMA,
        *(pa.field(name, pa.int64(), nullable=False) for name in STAMP_COLUMNS),  # always read
        pa.field("completed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


@dataclass(frozen=True)
class WatchOptions:
    folder: Path
    settle_seconds: float = 2.0
    marker: str | None = None  # e.g. ".done": NAME is complete once NAME.done exists
    poll_seconds: float = 0.1
    parts: WatchParts | None = None  # decide parts as their images come (--group-by)


@dataclass
class CompletionTracker:
    """Which files are complete: unchanged for ``settle_seconds``, or marked."""

    settle_seconds: float
    marker: str | None = None
    seen: dict[Path, tuple[int, int, float]] = field(default_factory=dict)  # size, mtime, since

    def complete(self, found: dict[Path, os.stat_result], now: float) -> list[Path]:
        """The files of ``found`` (path -> stat) complete at ``now``, in name order."""
        ready = []
        for path, stat in sorted(found.items()):
            size, mtime = stat.st_size, stat.st_mtime_ns
            previous = self.seen.get(path)
            if previous is None or previous[:2] != (size, mtime):
                self.seen[path] = previous = (size, mtime, now)
            if self.marker is not None:
                done = path.with_name(path.name + self.marker).exists()
            else:
                done = size > 0 and now - previous[2] >= self.settle_seconds
            if done:
                ready.append(path)
                del self.seen[path]
        for path in set(self.seen) - set(found):  # removed before it was complete
            del self.seen[path]
        return ready


def done_versions(out: Path) -> Ledger:
    """Every file version in the parts already written: the ledger."""
    done = Ledger()
    for table in watch_tables(out, ["path_bytes", "file_size", "file_mtime_ns"]):
        done.update(zip(*(table.column(i).to_pylist() for i in range(3)), strict=True))
    return done


@dataclass
class WatchStatus:
    """What the status line shows: counts and latency from complete to row written."""

    images: int = 0
    defects: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, the last 10,000
    parts: Counter[str] = field(default_factory=Counter)  # decisions made, by kind
    late: LateImages = field(default_factory=LateImages)  # after their part's decision
    # folders below the watched one it passed over (unreadable, or reached by a second path)
    folder_notes: dict[str, str] = field(default_factory=dict)
    tiles: Tiles | None = None  # how far a tiled batch in inference is (large images take long)
    silent: float | None = None  # seconds the watched folder has not answered, if long
    missing: bool = False  # the watched folder is gone (unmounted, moved or removed)
    out_silent: float | None = None  # seconds a write into the results has waited, if long
    model_silent: float | None = None  # seconds reading the model has waited, if long
    notes: list[str] = field(default_factory=list)  # what the watch said, to print once each

    def add(self, rows: list[dict[str, Any]], latencies: list[float]) -> None:
        self.images += len(rows)
        self.defects += sum(bool(row["is_defect"]) for row in rows)
        self.errors += sum(row["error"] is not None for row in rows)
        self.latencies = (self.latencies + latencies)[-10_000:]

    def line(self) -> str:
        under_way = (
            f"; tiles inferred {self.tiles.inferred}/{self.tiles.total}" if self.tiles else ""
        )
        if self.silent is not None:
            under_way += f"; the folder has not answered for {self.silent:.0f} s"
        if self.missing:
            under_way += "; the folder is gone"
        if self.out_silent is not None:
            under_way += f"; the results folder has not answered for {self.out_silent:.0f} s"
        if self.model_silent is not None:
            under_way += f"; the model's folder has not answered for {self.model_silent:.0f} s"
        if not self.latencies:
            waiting = "inspecting" if self.tiles else "waiting for files"
            return f"{counted(self.images, 'image')}, {waiting}{under_way}"
        p50, p95, p99 = np.percentile(np.array(self.latencies) * 1000, [50, 95, 99])
        parts = decisions_said(self.parts)
        return (
            f"{counted(self.images, 'image')}, {self.defects} defective, "
            f"{counted(self.errors, 'error')}; latency "
            f"(complete to written) p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"
            + (f"; parts: {parts}" if parts else "")
            + self._late_said()
            + under_way
        )

    def _late_said(self) -> str:
        if not self.late.images:
            return ""
        late = self.late
        said = late_counts_said(late.images, late.judged_defective, len(late.changed))
        return f"; {said}, in {LATE_IMAGES_FILE}"


def watch(
    spec: EngineSpec,
    options: RunOptions,
    watching: WatchOptions,
    status: Callable[[WatchStatus], None] = lambda _: None,
    result: WatchStatus | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Inspect complete files under ``watching.folder`` until a signal stops the process
    (``shutdown.signals_stop`` turns it into ``Stopped``, which leaves through here);
    ``result`` counts as it goes, so it holds the figures however the watch ends."""
    folder, out = watching.folder.resolve(), options.out.resolve()
    _check_folders(folder, out)
    devices = [watch_device(options)]
    result = result if result is not None else WatchStatus()
    model_told = partial(_wait_told, "model_silent", result, status, spec.source, STARTING)
    engine_info = described_run(spec, options, devices, model_told)
    check_decisions_fit(options.decisions, engine_info["manifest"])
    identity = job_identity(engine_info, options, [])
    record = json.dumps(run_record(engine_info, options), indent=1) + "\n"
    lock = OutputLock(out, "run --watch", out / WATCH_LOCK_FILE)
    opened = partial(_open_results, out, identity, record, lock, watching.parts)
    out_told = partial(_wait_told, "out_silent", result, status, out)
    done, decisions = _written(opened, partial(out_told, STARTING))
    try:
        tiles = TileProgress(partial(_tiles_told, result, status))
        worker = Worker(spec, options, devices[0], None, tiles.heartbeat())
        tracker = CompletionTracker(watching.settle_seconds, watching.marker)
        if decisions is not None:
            result.parts, result.late = decisions.counts, decisions.late
        status(result)
        compactor = Compactor(out, _hour_folder(out, datetime.datetime.now(datetime.timezone.utc)))
        compactor.start()  # the hours an earlier watch left unmerged
        scanner = FolderScan(folder, out, done, result.folder_notes)
        told = partial(_folder_told, result, status, folder)
        writing = "the watch waits to write its results there"
        written = partial(_written, told=partial(out_told, writing))
        for batch, completed in _complete_batches(scanner, tracker, watching, clock, told):
            if not batch:  # a poll that found nothing: parts may have waited long enough
                if decisions is not None:
                    written(partial(_expire, out, decisions))
                    status(result)
                continue
            rows = worker.rows_watched(
                list(enumerate(path for path, _ in batch)), options.batch_timeout
            )
            stamp = datetime.datetime.now(datetime.timezone.utc)
            _stamp_rows(rows, batch, stamp - datetime.timedelta(seconds=clock() - completed))
            written(partial(_save, out, rows, stamp, decisions, compactor))
            done.update((row["path_bytes"], row["file_size"], row["file_mtime_ns"]) for row in rows)
            result.add(rows, [clock() - completed] * len(rows))
            status(result)
    finally:
        lock.__exit__()


def watch_device(options: RunOptions) -> str:
    """The one device a watch runs on: the one given, or the first GPU when one is
    visible, else the CPU (a watch inspects files as they come, a batch at a time)."""
    devices = options.devices or (default_device(),)
    if len(devices) > 1:
        raise PsicbatchError("--watch runs on one device; give one --device")
    return devices[0]


def _open_results(
    out: Path, identity: JobIdentity, record: str, lock: OutputLock, parts: WatchParts | None
) -> tuple[Ledger, PartDecisions | None]:
    """``out`` claimed for this job and locked, the run's record written, the versions
    done and the parts' decisions read: everything the watch's start asks of its results
    folder, which the watch waits for in a thread it can stop (``_written``)."""
    with _writing(out):
        _claim(out, identity)
    lock.__enter__()
    try:
        with _writing(out):
            write_atomically(out / WATCH_RUN_FILE, lambda path: path.write_text(record))
        done = done_versions(out)
        with _writing(out):
            return done, None if parts is None else PartDecisions(out, parts)
    except BaseException:
        lock.__exit__()
        raise


def _stamp_rows(
    rows: list[dict[str, Any]],
    batch: list[tuple[Path, os.stat_result]],
    completed_at: datetime.datetime,
) -> None:
    """What a watch's rows record beside a run's: the file version and when it was complete."""
    for row, (_, stat) in zip(rows, batch, strict=True):
        row.pop("input_index")
        # The version the decoder read (it records it); the scanned one if it read none.
        row.setdefault("file_size", stat.st_size)
        row.setdefault("file_mtime_ns", stat.st_mtime_ns)
        row["completed_at"] = completed_at


def _tiles_told(
    result: WatchStatus, status: Callable[[WatchStatus], None], tiles: Tiles | None
) -> None:
    """A tiled batch moved on: the status line says so (called from the worker's thread)."""
    result.tiles = tiles
    status(result)


def _folder_told(
    result: WatchStatus,
    status: Callable[[WatchStatus], None],
    folder: Path,
    silent: float | None,
    missing: bool,
) -> None:
    """How long the watched folder has not answered (None: it answers), and whether it is
    gone: the status line says so, and a note when either begins and ends."""
    shown = readable_path(folder)
    _silence_noted(result.notes, folder, result.silent, silent, "the watch waits for it")
    if missing != result.missing:
        result.notes.append(
            f"{shown} is gone (unmounted, moved or removed?); the watch waits for it to come back"
            if missing
            else f"{shown} is back"
        )
    if (silent, missing) != (result.silent, result.missing):
        result.silent, result.missing = silent, missing
        status(result)


def _silence_noted(
    notes: list[str], place: Path, before: float | None, now: float | None, waiting: str
) -> None:
    """A note where ``place``'s silence begins (``now`` seconds of it, ``before`` None)
    or ends (``now`` None)."""
    if now is not None and before is None:
        notes.append(
            f"{readable_path(place)} has not answered for {now:.0f} s (a network share that "
            f"stopped answering?); {waiting}"
        )
    elif now is None and before is not None:
        notes.append(f"{readable_path(place)} answers again")


def _wait_told(
    waited: str,
    result: WatchStatus,
    status: Callable[[WatchStatus], None],
    place: Path,
    waiting: str,
    silent: float | None,
) -> None:
    """How long a call into ``place`` has waited (None: it is done), in the status's field
    ``waited`` (``out_silent``: the results folder; ``model_silent``: the model's): the
    status line says so, and a note when the wait begins (then what the watch does,
    ``waiting``) and ends."""
    _silence_noted(result.notes, place, getattr(result, waited), silent, waiting)
    if silent != getattr(result, waited):
        setattr(result, waited, silent)
        status(result)


def _written(call: Callable[[], T], told: Callable[[float | None], None]) -> T:
    """``call()``'s result, of work in the results folder, from a thread of its own: a
    share that stops answering holds that thread, while the watch still hears its stops
    and ``told`` hears how long the call has waited, from SILENT_SECONDS on."""
    return waited_for(call, told, "psicbatch-watch-write", SCAN_PATIENCE, SILENT_SECONDS)


def _save(
    out: Path,
    rows: list[dict[str, Any]],
    stamp: datetime.datetime,
    decisions: PartDecisions | None,
    compactor: Compactor,
) -> None:
    """A batch's rows as a part, and the decisions of the parts of a line they finish."""
    parts = decisions.parts_of(rows) if decisions is not None else []
    late = decisions.late_metadata(parts) if decisions is not None else {}
    compactor.part_written(_write_rows(out, rows, stamp, late))
    if decisions is not None:
        with _writing(out):
            decisions.add(rows, parts)


def _expire(out: Path, decisions: PartDecisions) -> None:
    """Decide the parts that waited past their timeout."""
    with _writing(out):
        decisions.expire()


def _write_rows(
    out: Path, rows: list[dict[str, Any]], stamp: datetime.datetime, late: dict[bytes, bytes]
) -> Path:
    """A batch's rows as a new part of the hour's partition, with the record of its
    ``late`` images where parts are decided (``PartDecisions.late_metadata``); the
    part's path."""
    with _writing(out):
        part = _part_path(out, stamp)
        table = pa.Table.from_pylist(rows, schema=WATCH_SCHEMA)
        if late:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **late})
        write_part(table, part)
    return part


def _complete_batches(
    scanner: FolderScan,
    tracker: CompletionTracker,
    watching: WatchOptions,
    clock: Callable[[], float],
    told: Callable[[float | None, bool], None] = lambda silent, missing: None,
) -> Iterator[tuple[list[tuple[Path, os.stat_result]], float]]:
    """Batches of complete files the scanner finds not done, with when they were found
    complete, and an empty batch for each poll that found none (time passes for waiting
    parts), and each second of a scan that waits on a folder that does not answer.
    ``told`` hears how long the folder has not answered (None: it answers) and whether
    it is gone. Every file found complete by one scan is handed out (and, by the caller,
    added to the scanner's done versions) before the next scan, so no scan finds a file
    that is still waiting."""
    while True:
        # A stop that code it interrupted swallowed (an exception raised in a finalizer is
        # only printed) is raised again here: the signal handler ignores further signals,
        # so the watch would otherwise run on, deaf to SIGTERM.
        raise_if_stopped()
        now = clock()
        # In a thread: a share that stops answering holds it, not the watch (its stops,
        # its status line, its parts).
        scan = in_a_thread(partial(_scan, scanner, tracker, now), "psicbatch-folder-scan")
        while wait_for_future([scan], timeout=SCAN_PATIENCE).not_done:
            silent = scanner.silent_for()
            told(silent, scanner.missing)
            if silent is not None:
                yield [], clock()
        found, ready = scan.result()
        told(None, scanner.missing)
        for start in range(0, len(ready), BATCH_LIMIT):
            yield [(path, found[path]) for path in ready[start : start + BATCH_LIMIT]], now
        if not ready:
            yield [], now
            time.sleep(max(watching.poll_seconds, scanner.wait_seconds))


def _scan(
    scanner: FolderScan, tracker: CompletionTracker, now: float
) -> tuple[dict[Path, os.stat_result], list[Path]]:
    """The files not done under the watched folder, and those of them complete."""
    found = scanner.pending(now)
    return found, tracker.complete(found, now)


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """A write into the watch's folder that fails (a full disk) as one line, not a
    traceback: what was not written is inspected, or decided, again at the next start."""
    try:
        yield
    except OSError as error:
        raise PsicbatchError(
            f"{readable_path(out)}: cannot write the watch's results ({error.strerror or error}); "
            "what was not written is inspected again at the next start"
        ) from None


def _hour_folder(out: Path, stamp: datetime.datetime) -> Path:
    """The partition of the hour of ``stamp`` (UTC)."""
    return out / f"date={stamp:%Y-%m-%d}" / f"hour={stamp:%H}"


def _part_path(out: Path, stamp: datetime.datetime) -> Path:
    """A new, unique part in the hour's partition (never an existing file's name)."""
    partition = _hour_folder(out, stamp)
    partition.mkdir(parents=True, exist_ok=True)
    return partition / f"part-{stamp:%Y%m%dT%H%M%S%f}-{os.getpid()}.parquet"


def _check_folders(folder: Path, out: Path) -> None:
    """The watched folder and the results folder, refused in one line before the engine
    opens (a results folder on a read-only file system would fail at the first batch)."""
    if not folder.is_dir():
        raise PsicbatchError(f"{readable_path(folder)}: --watch needs a folder")
    if out.exists() and not out.is_dir():
        raise PsicbatchError(f"{readable_path(out)}: not a folder (--watch writes a folder)")
    check_writable(out, out, "choose another --out")


def _claim(out: Path, identity: JobIdentity) -> None:
    """``out`` as this job's folder: new, or recorded with the same identity."""
    if (out / WATCH_JOB_FILE).exists():
        check_same_job(out, identity, WATCH_JOB_FILE)
        return
    if out.is_dir() and any(out.iterdir()):
        raise PsicbatchError(
            f"{readable_path(out)}: not empty and not a psicbatch --watch output; "
            "give another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    identity.write(out, WATCH_JOB_FILE)
