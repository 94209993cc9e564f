"""The batch runner: inputs -> decode -> engine -> rows -> Parquet, in input order.

Each worker decodes the next batch in a background thread while the engine runs the
current one (a queue of two batches bounds memory). One worker runs in this process; with
several (``--workers N`` on CPU, one per ``--devices`` GPU) each is a spawned process with
its own decoder and engine pulling batches from a shared queue, and the parent writes the
results in input order. At most a fixed number of batches is ever in flight, so memory
does not grow with the number of images.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

from psicbatch import __version__
from psicbatch.engines import Engine, Manifest, load_engine, read_manifest
from psicbatch.errors import PsicbatchError
from psicbatch.run.decode import DecodedBatch, decoder_name, make_decoder
from psicbatch.run.output import (
    SCHEMA_VERSION,
    OutputLock,
    PartWriter,
    completed_paths,
    finalize,
    parts_directory,
    remove_stale_temporaries,
)
from psicbatch.run.rows import error_row, result_row

Task = tuple[int, list[tuple[int, Path]]]  # batch number, [(input index, path)]
FLUSH_SECONDS = 10.0


@dataclass(frozen=True)
class EngineSpec:
    """Where the engine comes from: a built engine folder or a checkpoint (torch engine)."""

    engine_dir: Path | None = None
    checkpoint: Path | None = None
    precision: str = "auto"
    input_size: tuple[int, int] | None = None  # checkpoints: run at this size instead

    def describe(self, max_batch: int) -> Manifest:
        """The engine's manifest without loading the engine (for metadata and planning)."""
        if self.engine_dir is not None:
            return read_manifest(self.engine_dir)
        from psicbatch.engines.build import checkpoint_manifest

        return checkpoint_manifest(self.checkpoint, self.precision, "cpu", max_batch,
                                   self.input_size)  # fmt: skip

    def open(self, device: str, max_batch: int) -> Engine:
        if self.engine_dir is not None:
            return load_engine(self.engine_dir)
        from psicbatch.engines.build import checkpoint_engine

        return checkpoint_engine(self.checkpoint, self.precision, device, max_batch,
                                 self.input_size)  # fmt: skip


@dataclass(frozen=True)
class RunOptions:
    out: Path
    batch_size: int = 8
    workers: int = 1
    devices: tuple[int, ...] = ()
    decoder: str = "auto"
    threshold: float | None = None  # overrides the engine's image threshold
    resume: bool = False
    part_rows: int = 1024


@dataclass
class RunSummary:
    images: int = 0
    skipped: int = 0  # already done in an interrupted run
    defects: int = 0
    errors: int = 0
    seconds: float = 0.0
    decoder: str = ""
    error_examples: list[tuple[str, str]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over batches
    steady_images: int = 0  # images after the first batch (start-up excluded)
    steady_seconds: float = 0.0

    @property
    def steady_throughput(self) -> float:
        return self.steady_images / self.steady_seconds if self.steady_seconds else 0.0

    def add_times(self, times: dict[str, float]) -> None:
        for stage, seconds in times.items():
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

    ``executor(tasks, spec, options)`` yields (rows, stage seconds) of each batch in batch
    order; the default runs local workers, ``ray_executor.ray_results`` a Ray cluster.
    """
    if options.batch_size < 1 or options.workers < 1:
        raise PsicbatchError("--batch-size and --workers must be at least 1")
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    clock = time.monotonic()
    with OutputLock(options.out):
        done = _prepare_output(options)
        todo = [(i, p) for i, p in enumerate(paths) if str(p) not in done]
        summary = RunSummary(skipped=len(paths) - len(todo))
        tasks = [
            (number, todo[start : start + options.batch_size])
            for number, start in enumerate(range(0, len(todo), options.batch_size))
        ]
        engine_info = describe_run(spec, options)
        results = (executor or local_results)(tasks, spec, options)
        summary.decoder = engine_info["decoder"]
        writer = PartWriter(options.out)
        pending: list[dict[str, Any]] = []
        last_flush = first_batch_done = time.monotonic()
        for batch_number, (rows, times) in enumerate(results):
            if batch_number == 0:
                first_batch_done = time.monotonic()
            else:
                summary.steady_images += len(rows)
            pending += rows
            summary.add(rows)
            summary.add_times(times)
            if len(pending) >= options.part_rows or time.monotonic() - last_flush > FLUSH_SECONDS:
                summary.add_times(_timed_write(writer, pending))
                pending, last_flush = [], time.monotonic()
            if on_rows is not None:
                on_rows(summary)
        summary.add_times(_timed_write(writer, pending))
        summary.steady_seconds = time.monotonic() - first_batch_done
        summary.seconds = time.monotonic() - clock
        metadata = {
            "schema_version": SCHEMA_VERSION,
            "psicbatch_version": __version__,
            "checkpoint_sha256": engine_info["checkpoint_sha256"],
            "engine": engine_info["manifest"],
            "thresholds": engine_info["thresholds"],
            "decoder": engine_info["decoder"],
            "inputs": len(paths),
            "started_at": started_at,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        finalize(options.out, metadata)
    return summary


def _timed_write(writer: PartWriter, rows: list[dict[str, Any]]) -> dict[str, float]:
    start = time.perf_counter()
    writer.write(rows)
    return {"write": time.perf_counter() - start}


def _prepare_output(options: RunOptions) -> set[str]:
    parts = parts_directory(options.out)
    if parts.exists() and not options.resume:
        raise PsicbatchError(
            f"{options.out}: an interrupted run left results in {parts}; continue it with "
            "--resume, or delete that folder to start over"
        )
    if not options.resume:
        return set()
    remove_stale_temporaries(options.out)
    return completed_paths(options.out)


def describe_run(spec: EngineSpec, options: RunOptions) -> dict[str, Any]:
    """Engine and decoder facts recorded in the results file's metadata."""
    manifest = spec.describe(options.batch_size)
    thresholds = dict(manifest.thresholds)
    if options.threshold is not None:
        thresholds["classification"] = options.threshold
    return {
        "checkpoint_sha256": manifest.checkpoint_sha256,
        "manifest": {k: v for k, v in vars(manifest).items() if k != "parity"},
        "thresholds": thresholds,
        "decoder": decoder_name(options.decoder),
    }


def local_results(
    tasks: list[Task], spec: EngineSpec, options: RunOptions
) -> Iterator[tuple[list[dict[str, Any]], dict[str, float]]]:
    """(rows, stage seconds) of every batch in input order, from workers on this machine."""
    devices = [f"cuda:{d}" for d in options.devices] or ["cpu"] * options.workers
    if len(devices) == 1:
        worker = Worker(spec, options, devices[0], threads=None)
        return ((rows, times) for _, rows, times in worker.process(iter(tasks)))
    return _parallel_results(tasks, spec, options, devices)


class Worker:
    """One decoder and one engine; turns batches into result rows."""

    def __init__(self, spec: EngineSpec, options: RunOptions, device: str,
                 threads: int | None) -> None:  # fmt: skip
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        if device.startswith("cuda"):
            # Engines opened from a folder use the current device: make it this worker's GPU.
            torch.cuda.set_device(torch.device(device))
        self.engine = spec.open(device, max(options.batch_size, 1))
        manifest = self.engine.manifest
        self.threshold = (
            options.threshold
            if options.threshold is not None
            else manifest.thresholds["classification"]
        )
        self.seg_threshold = manifest.thresholds["segmentation"]
        device_id = int(device.split(":")[1]) if device.startswith("cuda") else None
        self.decoder = make_decoder(
            options.decoder,
            manifest.engine_preprocessing(),
            manifest.channels,
            options.batch_size,
            threads or 2,
            device_id,
        )

    def process(
        self, tasks: Iterator[Task]
    ) -> Iterator[tuple[int, list[dict[str, Any]], dict[str, float]]]:
        """(batch number, rows, stage seconds); decoding overlaps the previous batch."""
        for (number, items), decoded, decode_seconds in _prefetch(tasks, self._decode):
            times = {"decode+preprocess": decode_seconds}
            yield number, self._rows(items, decoded, times), times

    def _decode(self, task: Task) -> DecodedBatch:
        return self.decoder.decode([path for _, path in task[1]])

    def rows(self, items: list[tuple[int, Path]]) -> list[dict[str, Any]]:
        """Decode and infer one batch without prefetching (for executors that batch)."""
        return self._rows(items, self._decode((0, items)), {})

    def _rows(self, items: list[tuple[int, Path]], decoded: DecodedBatch,
              times: dict[str, float]) -> list[dict]:  # fmt: skip
        rows: list[dict[str, Any] | None] = [None] * len(items)
        inference = postprocess = 0.0
        for position, message in decoded.errors.items():
            index, path = items[position]
            rows[position] = error_row(index, path, message)
        if decoded.images is not None:
            largest = self.engine.batch_range[1]
            for start in range(0, len(decoded.positions), largest):
                chunk = slice(start, start + largest)
                began = time.perf_counter()
                probabilities, segmentation = self.engine.infer(decoded.images[chunk])
                inferred = time.perf_counter()
                inference += inferred - began
                for offset, position in enumerate(decoded.positions[chunk]):
                    index, path = items[position]
                    rows[position] = result_row(
                        index, path, probabilities[offset], segmentation[offset],
                        decoded.sizes[start + offset], self.threshold, self.seg_threshold,
                    )  # fmt: skip
                postprocess += time.perf_counter() - inferred
        times.update({"inference": inference, "postprocess": postprocess})
        return rows


def _prefetch(
    tasks: Iterator[Task], decode: Callable
) -> Iterator[tuple[Task, DecodedBatch, float]]:
    """Decode the next batch in a thread while the caller works on the current one."""
    ready: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            for task in tasks:
                if stop.is_set():
                    return
                began = time.perf_counter()
                decoded = decode(task)
                ready.put((task, decoded, time.perf_counter() - began))
        except BaseException as error:  # handed to the consumer, raised there
            ready.put(error)
            return
        ready.put(None)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _parallel_results(
    tasks: list[Task], spec: EngineSpec, options: RunOptions, devices: list[str]
) -> Iterator[tuple[list[dict[str, Any]], dict[str, float]]]:
    context = multiprocessing.get_context("spawn")
    task_queue = context.Queue()
    result_queue = context.Queue()
    threads = max(1, (os.cpu_count() or 1) // len(devices)) if devices[0] == "cpu" else 2
    workers = [
        context.Process(
            target=_worker_main,
            args=(spec, options, device, threads, task_queue, result_queue),
            daemon=True,
        )
        for device in devices
    ]
    for process in workers:
        process.start()
    for _ in workers:  # each worker reports once its engine is loaded
        _receive(result_queue, workers)
    return _ordered(tasks, task_queue, result_queue, workers)


def _ordered(tasks: list[Task], task_queue: Any, result_queue: Any,
             workers: list) -> Iterator[tuple[list[dict[str, Any]], dict[str, float]]]:  # fmt: skip
    """Feed at most 2 batches per worker ahead; yield results in batch order."""
    feed = iter(tasks)
    for task in islice(feed, 2 * len(workers)):
        task_queue.put(task)
    finished: dict[int, tuple[list[dict[str, Any]], dict[str, float]]] = {}
    next_number = 0
    try:
        while next_number < len(tasks):
            number, rows, times = _receive(result_queue, workers)
            finished[number] = (rows, times)
            while next_number in finished:
                yield finished.pop(next_number)
                next_number += 1
                task = next(feed, None)
                if task is not None:
                    task_queue.put(task)
    finally:
        for _ in workers:
            task_queue.put(None)
        for process in workers:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()


def _receive(result_queue: Any, workers: list) -> Any:
    while True:
        try:
            message = result_queue.get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in workers if not p.is_alive()]
            if dead:
                raise PsicbatchError(
                    f"a worker process stopped unexpectedly (exit code {dead[0].exitcode})"
                ) from None
            continue
        if isinstance(message, tuple) and message and message[0] == "failed":
            raise PsicbatchError(message[1])
        return message


def _worker_main(spec: EngineSpec, options: RunOptions, device: str, threads: int,
                 task_queue: Any, result_queue: Any) -> None:  # fmt: skip
    try:
        worker = Worker(spec, options, device, threads)
        result_queue.put("ready")
        for message in worker.process(iter(task_queue.get, None)):
            result_queue.put(message)
    except PsicbatchError as error:
        result_queue.put(("failed", str(error)))
    except Exception as error:  # reported to the parent, which stops the run cleanly
        result_queue.put(("failed", f"worker on {device} failed: {type(error).__name__}: {error}"))
