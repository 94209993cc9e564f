"""One worker: a decoder and an engine on one device, turning batches into result rows.

Three stages run at the same time, each in its own thread, on different batches:
decoding batch N+1, inference of batch N, and post-processing of batch N-1 (masks, RLE,
rows). On a GPU, inference and post-processing each have their own CUDA stream, ordered
by an event, so the engine's stream never waits for the host; only small results and
the masks of defective images cross to the host.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.run.decode import DecodedBatch, make_decoder
from psicbatch.run.options import RunOptions
from psicbatch.run.postprocess import result_rows, summarize_masks
from psicbatch.run.rows import error_row
from psicbatch.run.stages import staged

Task = tuple[int, list[tuple[int, Path]]]  # batch number, [(input index, path)]
Rows = list[dict[str, Any]]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without affinity
        return os.cpu_count() or 1


@dataclass
class InFlightBatch:
    """One batch on its way through the stages: decoded, inferred, then rows."""

    task: Task
    decoded: DecodedBatch | None  # dropped once rows are made, to free memory early
    times: dict[str, float]
    probabilities: torch.Tensor | None = None
    segmentation: torch.Tensor | None = None
    started: Any = None  # CUDA events around inference, on GPUs
    done: Any = None
    rows: Rows | None = None


class Worker:
    def __init__(
        self, spec: EngineSpec, options: RunOptions, device: str, threads: int | None
    ) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.engine = open_engine(spec, device, max(options.batch_size, 1))
        manifest = self.engine.manifest
        self.threshold = (
            options.threshold
            if options.threshold is not None
            else manifest.thresholds["classification"]
        )
        self.seg_threshold = manifest.thresholds["segmentation"]
        self.masks = options.masks
        self.decoder = make_decoder(
            options.decoder,
            manifest.engine_preprocessing(),
            options.batch_size,
            threads or 2,
            self.device,
            options.limits,
        )
        gpu = self.device.type == "cuda"
        self.post_stream = torch.cuda.Stream(self.device) if gpu else None

    def process(
        self, tasks: Iterator[Task], batch_timeout: float | None = None
    ) -> Iterator[tuple[int, Rows, dict[str, float]]]:
        """(batch number, rows, stage seconds) per batch, in order; the three stages overlap.
        With ``batch_timeout``, a batch taking longer raises ``StageTimeout`` (a spawned
        worker, which may wait for tasks, is watched by its parent instead)."""
        decoded = staged(tasks, self._decode, name="decoding")
        inferred = staged(decoded, self._infer, name="inference")
        for batch in staged(inferred, self._finish, timeout=batch_timeout, name="batch"):
            yield batch.task[0], batch.rows, batch.times

    def rows(self, items: list[tuple[int, Path]]) -> Rows:
        """One batch, stage after stage (for executors that hand out single batches)."""
        rows = self._finish(self._infer(self._decode((0, items)))).rows
        assert rows is not None
        return rows

    def _decode(self, task: Task) -> InFlightBatch:
        began = time.perf_counter()
        decoded = self.decoder.decode([path for _, path in task[1]])
        return InFlightBatch(task, decoded, {"decode+preprocess": time.perf_counter() - began})

    def _infer(self, batch: InFlightBatch) -> InFlightBatch:
        """Upload and run the engine; on GPUs only launches work, recording an event."""
        began = time.perf_counter()
        assert batch.decoded is not None, "a batch is inferred before it is finished"
        images = batch.decoded.images
        engine_seconds = 0.0
        gpu = self.post_stream is not None
        if images is not None and gpu:
            batch.started = torch.cuda.Event(enable_timing=True)
            batch.started.record(torch.cuda.current_stream(self.device))
        if images is not None:
            images = images.to(self.device, non_blocking=True)
            largest = self.engine.batch_range[1]
            outputs = []
            for start in range(0, len(images), largest):
                engine_began = time.perf_counter()
                outputs.append(self.engine.infer(images[start : start + largest]))
                engine_seconds += time.perf_counter() - engine_began
            if len(outputs) == 1:  # the usual case: no copy
                batch.probabilities, batch.segmentation = outputs[0]
            else:
                batch.probabilities = torch.cat([p for p, _ in outputs])
                batch.segmentation = torch.cat([s for _, s in outputs])
            if gpu:
                batch.done = torch.cuda.Event(enable_timing=True)
                batch.done.record(torch.cuda.current_stream(self.device))
        batch.times["inference"] = engine_seconds
        batch.times["in series"] = time.perf_counter() - began - engine_seconds
        return batch

    def _finish(self, batch: InFlightBatch) -> InFlightBatch:
        """Masks, RLE and rows for one batch, on the post-processing stream."""
        began = time.perf_counter()
        items = batch.task[1]
        decoded = batch.decoded
        assert decoded is not None, "a batch is finished once"
        rows: list[dict[str, Any]] = [{} for _ in items]  # every position gets a row below
        for position, message in decoded.errors.items():
            index, path = items[position]
            rows[position] = error_row(index, path, message)
        if batch.segmentation is not None and batch.probabilities is not None:
            if batch.done is not None and self.post_stream is not None:
                self.post_stream.wait_event(batch.done)
                batch.segmentation.record_stream(self.post_stream)
                batch.probabilities.record_stream(self.post_stream)
            with (
                torch.cuda.stream(self.post_stream)
                if self.post_stream
                else contextlib.nullcontext()
            ):
                summary = summarize_masks(
                    batch.probabilities, batch.segmentation, decoded.sizes, self.seg_threshold
                )
            if batch.done is not None:  # the GPU's own time for the engine, now known
                batch.times["inference"] = batch.started.elapsed_time(batch.done) / 1000
            done = result_rows(
                items, decoded.positions, summary, self.threshold, gated=self.masks == "gated"
            )
            for position, row in zip(decoded.positions, done, strict=True):
                rows[position] = row
        for position, stamp in decoded.stamps.items():  # which file version was read
            rows[position]["file_size"] = stamp.size
            rows[position]["file_mtime_ns"] = stamp.mtime_ns
        batch.rows = rows
        batch.decoded = batch.probabilities = batch.segmentation = None  # free memory early
        batch.times["postprocess"] = time.perf_counter() - began
        return batch
