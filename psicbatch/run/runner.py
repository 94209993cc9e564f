"""The batch runner: inputs -> decode -> engine -> rows -> Parquet, in input order.

Workers (see ``worker.Worker``) overlap decoding, inference and post-processing; this
module plans them (which devices, how many), writes what they return through a
background writer, and records in the results file the engine as it actually ran.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch

from psicbatch import __version__
from psicbatch.contention import contention, cpu_times
from psicbatch.decisions import CLASSIFIER
from psicbatch.devices import every_gpu
from psicbatch.engines.manifest import large_kernel_note
from psicbatch.engines.spec import EngineSpec, describe_engine
from psicbatch.paths import input_key
from psicbatch.roi import RegionOfInterest
from psicbatch.run.decode import decoder_name
from psicbatch.run.executors import local_results
from psicbatch.run.folder_scan import SILENT_SECONDS
from psicbatch.run.heartbeat import TileProgress, Tiles
from psicbatch.run.job import JobIdentity
from psicbatch.run.options import RunOptions
from psicbatch.run.output import (
    KEY_COLUMN,
    PATIENCE,
    SCHEMA_VERSION,
    ResultsOutput,
    Told,
    parts_directory,
)
from psicbatch.run.output_guard import RESULTS, check_output
from psicbatch.run.run_decisions import check_decisions_fit
from psicbatch.run.shutdown import raise_if_stopped
from psicbatch.run.waiting_calls import waited_for
from psicbatch.run.worker import LATENCY

FLUSH_SECONDS = 10.0


def worker_devices(options: RunOptions) -> list[str]:
    """One entry per worker: ``workers`` on the CPU, or ``workers`` on each GPU (by
    default every visible GPU)."""
    devices = options.devices or every_gpu()
    return [device for device in devices for _ in range(options.workers)]


def devices_said(devices: list[str]) -> str:
    """The workers' devices, each once, and how many workers each ran where more than one."""
    distinct = list(dict.fromkeys(devices))
    per_device = len(devices) // len(distinct)
    if per_device == 1:
        return ", ".join(distinct)
    return f"{', '.join(distinct)} ({per_device} workers{' each' if len(distinct) > 1 else ''})"


# Batches after the first that make a rate after start-up: over fewer, it would time how
# quickly batches finished beside the first are handed over (stages overlap, and a batch
# of unreadable files takes no inference): a 10-file run showed thousands of images/s.
STEADY_BATCHES = 3


@dataclass
class RunSummary:
    images: int = 0
    skipped: int = 0  # already done in an interrupted run
    recomputed: int = 0  # rows of an interrupted run whose file changed since (or vanished)
    dropped: int = 0  # rows of an interrupted run whose file is no longer among the inputs
    defects: int = 0
    errors: int = 0
    seconds: float = 0.0
    decoder: str = ""
    engine: str = ""  # backend, precision and device as they ran, and why
    error_examples: list[tuple[str, str]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over batches
    output_open: bool = False  # the results are checked and open: the engine opens next
    # The workers' engines are open: what follows is the first batch, not the opening
    # (a batch of large images through a tiled model can take minutes on a CPU).
    engines_open: bool = False
    tiles: Tiles | None = None  # how far the tiled batches under way are
    out_silent: float | None = None  # how long a call into the results has waited (10 s on)
    model_silent: float | None = None  # how long reading the model has waited (10 s on)
    assembled: tuple[int, int] | None = None  # parts in the results file, of how many
    steady_images: int = 0  # images after the first batch (start-up excluded)
    steady_batches: int = 0  # batches after the first
    steady_seconds: float = 0.0  # from the first batch's rows to the last's (no finalising)
    latencies: list[float] = field(default_factory=list)  # per image: decoding to its row
    # What else used the CPUs meanwhile (``contention``); None on a cluster, whose
    # workers are other machines' processes.
    contention: dict[str, Any] | None = None

    @property
    def steady_measured(self) -> bool:
        return self.steady_batches >= STEADY_BATCHES and self.steady_seconds > 0

    @property
    def steady_throughput(self) -> float:
        """Images/s after the first batch; 0 where too few batches followed it."""
        return self.steady_images / self.steady_seconds if self.steady_measured else 0.0

    def add_times(self, times: dict[str, float], images: int = 0) -> None:
        """A batch's stage seconds, and its latency (``LATENCY``) for each of its images."""
        for stage, seconds in times.items():
            if stage == LATENCY:
                self.latencies += [seconds] * images
            else:
                self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def add(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.images += 1
            if row.get("error"):
                self.errors += 1
                if len(self.error_examples) < 20:
                    self.error_examples.append((row["path"], row["error"]))
            elif row["is_defect"]:
                self.defects += 1


def run(
    paths: list[Path],
    spec: EngineSpec,
    options: RunOptions,
    on_rows: Callable[[RunSummary], None] | None = None,
    executor: Callable | None = None,
) -> RunSummary:
    """Process every path not already done and write ``options.out``.

    ``on_rows(summary)`` is called once the output and engine are checked, before any
    work, then after every batch, and as tiled batches move on (from a worker's
    thread with one local worker). ``executor(tasks, spec, options, devices, tiles=)``
    yields (rows, stage seconds) of each batch in batch order, telling ``tiles`` of
    tiled batches; the default runs local workers, ``ray_executor.ray_results`` a Ray
    cluster.
    """
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    clock = time.monotonic()
    keys = [input_key(path) for path in paths]
    summary = RunSummary()
    told = partial(_silence_told, "out_silent", summary, on_rows)  # of the results folder
    checked = partial(_check_out, options, spec, set(keys))
    waited_for(checked, told, "psicbatch-results-check", PATIENCE, SILENT_SECONDS)
    devices = worker_devices(options)
    model_told = partial(_silence_told, "model_silent", summary, on_rows)
    engine_info = described_run(spec, options, devices, model_told)
    check_decisions_fit(options.decisions, engine_info["manifest"])
    job = job_identity(engine_info, options, keys)
    with ResultsOutput(options.out, job, keys, options.resume, told) as output:
        todo = [(i, p) for i, p in enumerate(paths) if keys[i] not in output.done]
        summary.skipped = len(paths) - len(todo)
        summary.recomputed, summary.dropped = output.recomputed, output.dropped
        summary.output_open = True
        tasks = [
            (number, todo[start : start + options.batch_size])
            for number, start in enumerate(range(0, len(todo), options.batch_size))
        ]
        summary.decoder = engine_info["decoder"]
        manifest = engine_info["manifest"]
        summary.engine = f"{manifest['backend']} {manifest['precision']} on {devices_said(devices)}"
        summary.engine += large_kernel_note(manifest["backend_details"])
        if manifest["selection"]:
            summary.engine += f" ({manifest['selection']})"
        if on_rows is not None:  # the inputs, output and engine are checked: work starts
            on_rows(summary)
        before = cpu_times()
        tiles = TileProgress(partial(_tiles_told, summary, on_rows)) if on_rows else None
        results = (executor or local_results)(tasks, spec, options, devices, tiles=tiles)
        if executor is None and on_rows is not None:  # local workers open theirs first
            summary.engines_open = True
            on_rows(summary)
        first, last = _save_results(results, keys, output, summary, options, told, on_rows)
        summary.contention = contention(before, cpu_times()) if executor is None else None
        summary.steady_seconds = last - first
        metadata = _metadata(engine_info, options, summary, len(paths), started_at)
        output.finish(metadata, told, partial(_assembly_told, summary, on_rows))
        summary.add_times({"write": output.write_seconds})
        summary.seconds = time.monotonic() - clock
    return summary


def _check_out(options: RunOptions, spec: EngineSpec, keys: set[bytes]) -> None:
    """Refuse, in one line, results a run must not write (see ``check_output``)."""
    parts = parts_directory(options.out)
    check_output(
        options.out,
        RESULTS,
        keys,
        {
            "the --list file": options.list_file,
            "the model": spec.checkpoint,
            "the engine folder": spec.engine_dir,
        },
        overwrite=options.overwrite or (options.resume and parts.is_dir()),
        earlier=f" of a finished run (no {parts.name} to resume from)" if options.resume else "",
    )


def _tiles_told(
    summary: RunSummary, on_rows: Callable[[RunSummary], None], tiles: Tiles | None
) -> None:
    """The workers told of their work: their engines are open (Ray's actors tell it in
    no other way), and their tiled batches are this far."""
    summary.tiles = tiles
    summary.engines_open = True
    on_rows(summary)


def _silence_told(
    waited: str,
    summary: RunSummary,
    on_rows: Callable[[RunSummary], None] | None,
    silent: float | None,
) -> None:
    """How long a call has waited (None: it is done), in the summary's field ``waited``:
    ``out_silent`` for the results folder, ``model_silent`` for the model's."""
    if silent != getattr(summary, waited):
        setattr(summary, waited, silent)
        if on_rows is not None:
            on_rows(summary)


def _assembly_told(
    summary: RunSummary, on_rows: Callable[[RunSummary], None] | None, done: int, total: int
) -> None:
    """How many parts are in the results file so far."""
    summary.assembled = done, total
    if on_rows is not None:
        on_rows(summary)


def _save_results(
    results: Any,
    keys: list[bytes],
    output: ResultsOutput,
    summary: RunSummary,
    options: RunOptions,
    told: Told,
    on_rows: Callable[[RunSummary], None] | None,
) -> tuple[float, float]:
    """Write every batch's rows as they arrive (in parts, so a stopped run keeps them);
    returns when the first batch was done (where steady throughput starts) and when the
    last one was. ``told`` hears how long the results folder has not answered."""
    pending: list[dict[str, Any]] = []
    last_flush = first_batch_done = time.monotonic()
    try:
        for batch_number, (rows, times) in enumerate(results):
            raise_if_stopped()  # a stop that the code it interrupted swallowed
            if batch_number == 0:
                first_batch_done = time.monotonic()
            else:
                summary.steady_images += len(rows)
                summary.steady_batches += 1
            for row in rows:
                row[KEY_COLUMN] = keys[row["input_index"]]
            pending += rows
            summary.add(rows)
            summary.add_times(times, len(rows))
            if len(pending) >= options.part_rows or time.monotonic() - last_flush > FLUSH_SECONDS:
                # Taken from ``pending`` before the hand-over: a stop (a signal raises at
                # any point) right after it must not hand the same rows over again below.
                flushing, pending, last_flush = pending, [], time.monotonic()
                output.write(flushing, told)
            if on_rows is not None:
                on_rows(summary)
    finally:  # rows already computed are saved even when the run stops (once: see above)
        close = getattr(results, "close", None)
        if close is not None:
            close()  # stops the workers at once when the run stops early
        # A run that stops does not wait on a results folder that does not answer.
        output.write(pending, told, patient=sys.exc_info()[0] is None)
    return first_batch_done, time.monotonic()


def run_record(engine_info: dict[str, Any], options: RunOptions) -> dict[str, Any]:
    """How a run judges images, as results record it for reports and audits: the engine
    as it runs (with the images its model learnt from), the thresholds, the decision file
    (with its validation images) and the region of interest."""
    return {
        "schema_version": SCHEMA_VERSION,
        "psicbatch_version": __version__,
        "checkpoint_sha256": engine_info["checkpoint_sha256"],
        "engine": engine_info["manifest"],
        "devices": engine_info["devices"],
        "thresholds": engine_info["thresholds"],
        "decoder": engine_info["decoder"],
        "masks": options.masks,
        "decisions": options.decisions,
        "roi": engine_info["roi"],
    }


def _metadata(
    engine_info: dict[str, Any],
    options: RunOptions,
    summary: RunSummary,
    inputs: int,
    started_at: str,
) -> dict[str, Any]:
    """The results file's metadata: the run's record, and how the run went."""
    return {
        **run_record(engine_info, options),
        "inputs": inputs,
        "resumed": {
            "kept": summary.skipped,
            "recomputed": summary.recomputed,
            "dropped": summary.dropped,
        }
        if options.resume
        else None,
        "started_at": started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def described_run(
    spec: EngineSpec, options: RunOptions, devices: list[str], told: Told
) -> dict[str, Any]:
    """``describe_run`` from a thread of its own: it reads and hashes the model, which on
    a share that stopped answering waited in the main thread without a word, deaf to a
    stop. ``told`` hears how long it has waited, from SILENT_SECONDS on."""
    call = partial(describe_run, spec, options, devices)
    return waited_for(call, told, "psicbatch-model-read", PATIENCE, SILENT_SECONDS)


def describe_run(spec: EngineSpec, options: RunOptions, devices: list[str]) -> dict[str, Any]:
    """Engine, devices and decoder as they run, recorded in the results file's metadata."""
    manifest = describe_engine(spec, devices[0], options.batch_size)
    thresholds: dict[str, Any] = dict(manifest.thresholds)
    if options.threshold is not None:
        thresholds["classification"] = options.threshold
    if options.rule != CLASSIFIER:  # a decision file's area rule decides too
        thresholds.update(rule=options.rule.name, min_area=options.rule.min_area)
    # Decoded here, before any image: a bad region fails the run at once.
    region = RegionOfInterest(options.roi).record() if options.roi is not None else None
    if region is not None:  # masks, areas and the area rule look inside it only
        thresholds["roi_sha256"] = region["sha256"]
    return {
        "checkpoint_sha256": manifest.checkpoint_sha256,
        "manifest": {k: v for k, v in vars(manifest).items() if k != "parity"},
        "devices": devices,
        "thresholds": thresholds,
        "decoder": decoder_name(
            options.decoder, manifest.engine_preprocessing(), torch.device(devices[0])
        ),
        "roi": region,
    }


def _digest(keys: list[bytes]) -> str:
    """Inputs given as a list (not as sources): identified by their absolute paths."""
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key + b"\0")
    return f"{len(keys)} listed inputs, sha256 {digest.hexdigest()}"


def job_identity(
    engine_info: dict[str, Any], options: RunOptions, keys: list[bytes]
) -> JobIdentity:
    """What a resumed run must share with the run it continues (see ``job``)."""
    manifest = engine_info["manifest"]
    engine_keys = (
        "backend",
        "precision",
        "engine_sha256",
        "data_files",
        "checkpoint_sha256",
        "input_size",
    )
    return JobIdentity(
        sources=list(options.sources) or [_digest(keys)],
        engine={key: manifest[key] for key in engine_keys},
        thresholds=engine_info["thresholds"],
        masks=options.masks,
        decoder=engine_info["decoder"],
        preprocessing=manifest["preprocessing"],
    )
