"""One worker: a decoder and an engine on one device, turning batches into result rows.

Four stages run at the same time, each in its own thread (decoding in several, where
one batch's files leave decoding threads idle), on different batches:
decoding (with the upload as uint8 and the normalisation on the engine's device),
inference, post-processing on the device (masks, areas, boxes, RLE run boundaries), and
rows on the host (RLE strings, result rows). On a GPU each stage that launches GPU work
queues it on a CUDA stream of its own and hands the batch on with an event (``streams``),
so no stage waits for another on the host and the inference thread only launches the
engine; only small results and the run boundaries of defective masks cross back to the
host, and the per-image Python work happens in a thread that launches no GPU work.
Each stage beats the worker's heartbeat as it finishes a piece of work, so a batch that
takes long while its work moves on (many tiles, large images) is not taken for a hung one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.preprocess import Normalizer
from psicbatch.roi import RegionOfInterest
from psicbatch.run import streams
from psicbatch.run.decode import DecodedBatch, Decoder, make_decoder
from psicbatch.run.failures import said_in_one_line
from psicbatch.run.heartbeat import Heartbeat
from psicbatch.run.options import RunOptions
from psicbatch.run.postprocess import MaskSummary, result_rows, summarize_masks, summarize_tiles
from psicbatch.run.rows import error_row
from psicbatch.run.stages import staged

Task = tuple[int, list[tuple[int, Path]]]  # batch number, [(input index, path)]
STAGE_COUNT = 4  # decoding, inference, post-processing, rows
LATENCY = "latency"  # in a batch's times: seconds from the start of decoding to its rows
Rows = list[dict[str, Any]]


@dataclass
class InFlightBatch:
    """One batch on its way through the stages: decoded, inferred, then rows."""

    task: Task
    decoded: DecodedBatch | None  # dropped once rows are made, to free memory early
    times: dict[str, float]
    began: float = field(default_factory=time.perf_counter)  # when its decoding began
    images: torch.Tensor | None = None  # network input on the engine's device
    uploaded: streams.Event = None  # CUDA events, on GPUs: input ready,
    started: streams.Event = None  # inference began,
    done: streams.Event = None  # outputs ready
    probabilities: torch.Tensor | None = None
    segmentation: torch.Tensor | None = None
    summary: MaskSummary | None = None  # on the host
    rows: Rows | None = None


def _at_least(probabilities: torch.Tensor, threshold: float) -> torch.Tensor:
    return probabilities.float() >= threshold


class Worker:
    def __init__(
        self,
        spec: EngineSpec,
        options: RunOptions,
        device: str,
        threads: int | None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.heartbeat = heartbeat or Heartbeat()
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        with said_in_one_line(f"worker on {device}"):  # e.g. CUDA that cannot start
            self.engine = open_engine(spec, device, max(options.batch_size, 1))
        manifest = self.engine.manifest
        self.threshold = (
            options.threshold
            if options.threshold is not None
            else manifest.thresholds["classification"]
        )
        self.seg_threshold = manifest.thresholds["segmentation"]
        self.masks = options.masks
        self.rule = options.rule
        self.roi = RegionOfInterest(options.roi) if options.roi is not None else None
        # Gated masks: an image whose probability already judges it defect-free gets an
        # empty mask, so its mask is not computed (on a healthy line, nearly every image).
        gated = self.masks == "gated" and self.rule.needs_probability
        self.gate = partial(_at_least, threshold=self.threshold) if gated else None
        preprocessing = manifest.engine_preprocessing()
        self.decoder: Decoder = make_decoder(
            options.decoder,
            preprocessing,
            options.batch_size,
            threads or 2,
            self.device,
            options.limits,
        )
        self.normalizer = Normalizer(preprocessing, self.device)
        self.upload_stream = streams.new_stream(self.device)
        self.infer_stream = streams.new_stream(self.device)
        self.post_stream = streams.new_stream(self.device)
        self.stages = (self._decode_task, self._infer, self._postprocess, self._make_rows)
        self.stage_locks = tuple(threading.Lock() for _ in self.stages)  # for ``rows``

    def process(
        self,
        tasks: Iterator[Task],
        batch_timeout: float | None = None,
        threads: list[threading.Thread] | None = None,
    ) -> Generator[tuple[int, Rows, dict[str, float]], None, None]:
        """(batch number, rows, stage seconds) per batch, in order; the four stages overlap.
        With ``batch_timeout``, that long without a batch's rows or a heartbeat raises
        ``StageTimeout`` (a spawned worker, which may wait for tasks, is watched by its
        parent instead). ``threads`` gets the stages' threads (``staged``)."""
        decoded = staged(
            tasks, self._decode, name="decoding", workers=self.decoder.at_once, threads=threads
        )
        inferred = staged(decoded, self._infer, name="inference", threads=threads)
        summarized = staged(inferred, self._postprocess, name="post-processing", threads=threads)
        for batch in staged(
            summarized,
            self._make_rows,
            timeout=batch_timeout,
            name="batch",
            heartbeat=self.heartbeat,
            threads=threads,
        ):
            batch.times[LATENCY] = time.perf_counter() - batch.began
            yield batch.task[0], batch.rows, batch.times

    def rows(self, items: list[tuple[int, Path]]) -> Rows:
        """One batch, stage after stage, for executors that hand out single batches.
        Several threads may call it at once (a Ray actor running one call per stage): each
        stage takes one batch at a time, so batches overlap stage by stage as in
        ``process``."""
        return self.timed_rows(items)[0]

    def timed_rows(self, items: list[tuple[int, Path]]) -> tuple[Rows, dict[str, float]]:
        """``rows``, with the batch's stage seconds and its latency (``LATENCY``)."""
        batch = InFlightBatch((0, items), None, {})
        for stage, lock in zip(self.stages, self.stage_locks, strict=True):
            with lock:
                batch = stage(batch)
        assert batch.rows is not None
        batch.times[LATENCY] = time.perf_counter() - batch.began
        return batch.rows, batch.times

    def rows_watched(self, items: list[tuple[int, Path]], timeout: float) -> Rows:
        """``rows``, in a thread of its own, for a caller that no pipeline watches (a
        watch): ``timeout`` seconds without a stage's progress raise ``StageTimeout``, and
        an unexpected error is one line (``said_in_one_line``)."""
        with said_in_one_line(f"worker on {self.device}"):
            (rows,) = staged(
                [items], self.rows, timeout=timeout, name="batch", heartbeat=self.heartbeat
            )
        return rows

    def _decode_task(self, batch: InFlightBatch) -> InFlightBatch:
        return self._decode(batch.task)

    def _decode(self, task: Task) -> InFlightBatch:
        """Decode, then upload (pixels, from pinned memory on GPUs) and normalise on the
        engine's device, all in the decoding thread, beside inference."""
        began = time.perf_counter()
        decoded = self.decoder.decode([path for _, path in task[1]])
        batch = InFlightBatch(task, decoded, {}, began)
        if decoded.images is not None:
            with streams.on(self.upload_stream):
                images = decoded.images.to(self.device, non_blocking=True)
                streams.used_on(self.upload_stream, images)  # GPU decoding made it elsewhere
                ready = images.is_floating_point()  # the null decoder's ready input
                # Tiles stay as pixels until each engine call: a large image's tiles in
                # float32 would take 4 bytes per pixel more.
                tiled = bool(decoded.grids)
                batch.images = images if ready or tiled else self.normalizer(images)
                batch.uploaded = streams.mark(self.upload_stream)
            if images is not decoded.images:
                decoded.images = None  # the host copy is no longer needed
            # Else the batch keeps its pixels until its rows: DALI's GPU output is DALI's
            # memory, which record_stream cannot keep from reuse while work reads it.
        batch.times["decode+preprocess"] = time.perf_counter() - began
        self.heartbeat.beat()
        return batch

    def _infer(self, batch: InFlightBatch) -> InFlightBatch:
        """Run the engine; on GPUs this only queues work on the inference stream, after
        the upload's event, and marks its start and end."""
        began = time.perf_counter()
        images = batch.images
        engine_seconds = 0.0
        tiled = batch.decoded is not None and bool(batch.decoded.grids)
        if images is not None:
            streams.hand_over(batch.uploaded, self.infer_stream, images)
            with streams.on(self.infer_stream):
                batch.started = streams.mark(self.infer_stream)
                largest = self.engine.batch_range[1]
                for start in range(0, len(images), largest):
                    engine_began = time.perf_counter()
                    chunk = images[start : start + largest]
                    if not chunk.is_floating_point():  # tiles: normalised call by call
                        chunk = self.normalizer(chunk)
                    probabilities, segmentation = self.engine.infer(chunk)
                    engine_seconds += time.perf_counter() - engine_began
                    # On GPUs, queued: launches block once the queues fill.
                    if tiled:
                        inferred, count = start + len(chunk), len(batch.task[1])
                        self.heartbeat.tiles_inferred(inferred, len(images), count)
                    else:
                        self.heartbeat.beat()
                    if len(chunk) == len(images):  # the usual case: one call, no copy
                        batch.probabilities, batch.segmentation = probabilities, segmentation
                        continue
                    if start == 0:  # more than one call (tiles): each written in place
                        batch.probabilities = probabilities.new_empty(len(images))
                        batch.segmentation = segmentation.new_empty(
                            (len(images), *segmentation.shape[1:])
                        )
                    assert batch.probabilities is not None and batch.segmentation is not None
                    batch.probabilities[start : start + len(chunk)] = probabilities
                    batch.segmentation[start : start + len(chunk)] = segmentation
                batch.done = streams.mark(self.infer_stream)
            batch.images = None
        batch.times["inference"] = engine_seconds
        batch.times["in series"] = time.perf_counter() - began - engine_seconds
        return batch

    def _postprocess(self, batch: InFlightBatch) -> InFlightBatch:
        """Masks on the device, on the post-processing stream, after inference's event;
        their summary (areas, boxes, run boundaries) comes back to the host."""
        began = time.perf_counter()
        decoded = batch.decoded
        assert decoded is not None, "a batch is post-processed once"
        if batch.segmentation is not None and batch.probabilities is not None:
            streams.hand_over(batch.done, self.post_stream, batch.segmentation, batch.probabilities)
            with streams.on(self.post_stream):
                if decoded.grids:  # a tiled model: stitch each image's tiles
                    batch.summary = summarize_tiles(
                        batch.probabilities,
                        batch.segmentation,
                        decoded.grids,
                        self.seg_threshold,
                        self.roi,
                        self.gate,
                    )
                else:
                    batch.summary = summarize_masks(
                        batch.probabilities,
                        batch.segmentation,
                        decoded.sizes,
                        self.seg_threshold,
                        self.roi,
                        self.gate,
                    )
            if batch.started is not None and batch.done is not None:  # the GPU's own time
                batch.times["inference"] = batch.started.elapsed_time(batch.done) / 1000
        batch.probabilities = batch.segmentation = None  # free device memory early
        batch.times["postprocess"] = time.perf_counter() - began
        self.heartbeat.beat()
        return batch

    def _make_rows(self, batch: InFlightBatch) -> InFlightBatch:
        """RLE and result rows on the host, in a thread that launches no GPU work."""
        began = time.perf_counter()
        items = batch.task[1]
        decoded = batch.decoded
        assert decoded is not None, "a batch gets its rows once"
        rows: list[dict[str, Any]] = [{} for _ in items]  # every position gets a row below
        for position, message in decoded.errors.items():
            index, path = items[position]
            rows[position] = error_row(index, path, message)
        if batch.summary is not None:
            done = result_rows(
                items,
                decoded.positions,
                batch.summary,
                self.threshold,
                self.masks == "gated",
                self.rule,
            )
            for position, row in zip(decoded.positions, done, strict=True):
                rows[position] = row
        for position, stamp in decoded.stamps.items():  # which file version was read
            rows[position]["file_size"] = stamp.size
            rows[position]["file_mtime_ns"] = stamp.mtime_ns
        batch.rows = rows
        batch.decoded = batch.summary = None
        batch.times["rows"] = time.perf_counter() - began
        self.heartbeat.beat()
        return batch
