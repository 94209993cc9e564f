"""The Python API: inspection as a library call, for line software that embeds it.

    from psicbatch import Inspector

    with Inspector("engines/my-engine", device="cuda:0") as inspector:
        for result in inspector.inspect(["part-001.png", "part-002.png"]):
            print(result.path, result.probability, result.is_defect, result.mask_area)

Files or in-memory images (numpy arrays: uint8, or uint16 grayscale at full range) go
through the same worker as ``psicbatch run`` (decoding, the engine, masks on the device,
RLE), batch by batch;
typed results come back in input order, an unreadable image as a result with its error.
``part_decision`` turns the results of one part's images into the part's decision.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from psicbatch.assets import demo_model_path
from psicbatch.devices import resolve_device
from psicbatch.engines.spec import EngineSpec
from psicbatch.errors import PsicbatchError
from psicbatch.run import rle
from psicbatch.run.batch_choice import chosen_batch_size
from psicbatch.run.decode import ArrayDecoder
from psicbatch.run.files import DEFAULT_DECODE_SECONDS, DEFAULT_MAX_MIB, MIB, FileLimits
from psicbatch.run.heartbeat import TileProgress, Tiles
from psicbatch.run.options import DEFAULT_BATCH_TIMEOUT, RunOptions
from psicbatch.run.part_table import verdict
from psicbatch.run.run_decisions import check_decisions_fit, run_decisions
from psicbatch.run.stages import StageTimeout
from psicbatch.run.worker import Task, Worker


@dataclass(frozen=True)
class Inspection:
    """One image's result, as a row of ``psicbatch run`` holds it."""

    index: int  # its position in the inputs
    path: str  # the file, or "<array N>" for an in-memory image
    probability: float | None
    is_defect: bool | None
    mask_rle: dict[str, Any] | None  # COCO RLE at the image's original size
    mask_area: int | None  # defect pixels
    box: tuple[int, int, int, int] | None  # x, y, w, h of the mask, None when empty
    size: tuple[int, int] | None  # original (height, width)
    error: str | None  # why the image could not be inspected

    def mask(self) -> np.ndarray:
        """The defect mask as a bool H x W array."""
        if self.mask_rle is None:
            raise PsicbatchError(f"{self.path}: no mask ({self.error})")
        return rle.decode(self.mask_rle)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Inspection:
        box = row.get("mask_bbox")
        return cls(
            index=row["input_index"],
            path=row["path"],
            probability=row.get("probability"),
            is_defect=row.get("is_defect"),
            mask_rle=row.get("mask"),
            mask_area=row.get("mask_area"),
            box=None if box is None else (box["x"], box["y"], box["w"], box["h"]),
            size=None if row.get("height") is None else (row["height"], row["width"]),
            error=row.get("error"),
        )


def part_decision(inspections: Iterable[Inspection], images: int | None = None) -> str:
    """The decision on a part from the results of its images (its sides, its cameras), as
    ``report --parts-csv`` decides: ``reject`` when any was judged defective, ``unknown``
    when none was but one could not be inspected, ``incomplete`` when there are fewer
    results than the part's ``images`` (where given), ``pass`` otherwise."""
    results = list(inspections)
    if not results:
        raise PsicbatchError("a part's decision needs the results of its images; none given")
    judged = sum(bool(result.is_defect) for result in results if result.error is None)
    errors = sum(result.error is not None for result in results)
    return verdict(judged, errors, len(results), images)


def _listed(
    images: Iterable[str | Path | np.ndarray] | str | Path,
) -> list[str | Path | np.ndarray]:
    """The images of one ``inspect`` call, one path as one image."""
    if isinstance(images, str | os.PathLike):
        return [Path(images)]
    if isinstance(images, np.ndarray | bytes):
        raise PsicbatchError(
            f"give a list of images, not one {type(images).__name__}: [frame] for one "
            "image, list(frames) for a stack of them"
        )
    return list(images)


class Inspector:
    """A decoder and an engine opened once, on one device, for any number of calls, one
    at a time (an engine's buffers and CUDA graphs serve one call at a time): calls from
    several threads take turns."""

    def __init__(
        self,
        engine_or_checkpoint: str | Path | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        precision: str = "auto",
        decoder: str = "auto",
        decisions: str | Path | None = None,
        roi: str | Path | None = None,
        masks: str = "gated",
        threshold: float | None = None,
        batch_timeout: float | None = DEFAULT_BATCH_TIMEOUT,
        progress: Callable[[Tiles | None], None] | None = None,
        max_file_size: float = DEFAULT_MAX_MIB,
        decode_timeout: float = DEFAULT_DECODE_SECONDS,
    ) -> None:
        """``engine_or_checkpoint``: an engine folder or a checkpoint (default: the bundled
        demo model); ``batch_size``: images per batch (None: as ``psicbatch run
        --batch-size auto`` chooses for the engine and device); ``decisions``: a decision
        file from ``psicbatch calibrate`` (default: the decisions stored with the engine,
        if any, as ``psicbatch run`` applies them);
        ``threshold``: the image threshold instead of any decisions (the model's when
        neither is given); ``batch_timeout``: seconds without progress after which
        ``inspect`` raises ``StageTimeout`` rather than leave its caller waiting on a hung
        engine (``None``: wait however long); ``progress``: told how far a tiled model's
        batch is (``Tiles``: tiles inferred, of how many, the images' worth they make; None
        once its inference is done) as it begins and ends and at most four times a second
        between, from one of the Inspector's threads: such a batch of line-scan images can
        take minutes on a CPU before its results come; ``max_file_size`` (MiB) and
        ``decode_timeout`` (seconds): a file above the size, or one whose reading and
        decoding takes longer (a share that stopped answering), gets a result with its
        error, as ``psicbatch run --max-file-size/--decode-timeout``."""
        if decisions is not None and threshold is not None:
            raise PsicbatchError("give threshold or decisions, not both")
        if batch_timeout is not None and not 0 < batch_timeout < math.inf:
            raise PsicbatchError("batch_timeout must be positive and finite, or None")
        if not 0 < max_file_size < math.inf:
            raise PsicbatchError("max_file_size must be a positive and finite number of MiB")
        source = Path(engine_or_checkpoint) if engine_or_checkpoint else demo_model_path()
        folder = source.is_dir()
        spec = EngineSpec(
            engine_dir=source if folder else None,
            checkpoint=None if folder else source,
            precision=precision,
        )
        chosen = run_decisions(
            Path(decisions) if decisions else None,
            spec.engine_dir,
            threshold,
            Path(roi) if roi is not None else None,
        )
        where = resolve_device(device)
        if batch_size is None:
            batch_size, _ = chosen_batch_size(spec, where)
        options = RunOptions(
            out=Path("results.parquet"),  # never written: results are returned
            batch_size=batch_size,
            devices=(where,),
            decoder=decoder,
            threshold=chosen.threshold,
            rule=chosen.rule,
            decisions=chosen.record,
            roi=chosen.roi,
            masks=masks,
            limits=FileLimits(int(max_file_size * MIB), decode_timeout),
        )
        self.batch_size, self.batch_timeout = batch_size, batch_timeout
        heartbeat = TileProgress(progress).heartbeat() if progress is not None else None
        self.worker = Worker(spec, options, where, threads=None, heartbeat=heartbeat)
        try:
            check_decisions_fit(chosen.record, vars(self.worker.engine.manifest))
        except PsicbatchError:
            self.worker.decoder.close()  # its threads would outlive a refused Inspector
            raise
        self.files_decoder = self.worker.decoder
        self.inspecting = threading.Lock()  # one ``inspect`` at a time: they share the worker
        self.owner: int | None = None  # the thread whose ``inspect`` holds it
        self.pipeline: list[threading.Thread] = []  # of the last ``inspect``
        self.arrays = ArrayDecoder(
            self.worker.engine.manifest.engine_preprocessing(), pin=where.startswith("cuda")
        )

    def inspect(
        self, images: Iterable[str | Path | np.ndarray] | str | Path
    ) -> Iterator[Inspection]:
        """Results for ``images`` (all files, or all numpy arrays), in their order; one
        path is one image (its characters were taken for paths). One array is refused:
        whether it is an image or a stack of them is the caller's to say.

        One ``inspect`` runs at a time, since they share the worker (``_take_turn``): one
        from another thread waits until the one under way has inspected all its images
        (or its loop was left); one from the same thread is refused. One started after a
        loop left early waits until the earlier one's batches in flight are through the
        worker."""
        self._take_turn()
        inspecting = True
        try:
            self._earlier_one_ended()
            tasks = self._tasks(_listed(images))
            self.pipeline = []
            batches = self.worker.process(iter(tasks), self.batch_timeout, self.pipeline)
            for number, rows, _ in batches:
                results = [Inspection.from_row(row) for row in rows]
                if number == len(tasks) - 1:  # all inspected: another may start at once
                    batches.close()
                    self.pipeline = []  # its threads have no work left, only to notice it
                    self._end()
                    inspecting = False
                yield from results
        finally:
            if inspecting:
                self._end()

    def _take_turn(self) -> None:
        """This call's turn at the worker. Another thread's inspection is waited for, up
        to ``batch_timeout`` (a service's threads share one Inspector, and its engine's
        memory, rather than refuse each other); this thread's own, a loop not yet
        finished, cannot end while this thread waits, so it is refused."""
        if self.owner == threading.get_ident():
            raise PsicbatchError(
                "this Inspector is inspecting other images in this thread (a loop not yet "
                "finished): finish or leave that loop first"
            )
        if not self.inspecting.acquire(
            timeout=-1 if self.batch_timeout is None else self.batch_timeout
        ):
            raise PsicbatchError(
                f"this Inspector waited {self.batch_timeout:g} s for another thread's "
                "inspection to end (a loop neither finished nor left?)"
            )
        self.owner = threading.get_ident()

    def _earlier_one_ended(self) -> None:
        """Wait until the threads of the last ``inspect`` have ended where its loop was
        left early: they may still be decoding or inferring the batches it had in flight
        (after a whole inspection, waiting for them to notice the end would add a tenth
        of a second to every call)."""
        deadline = None if self.batch_timeout is None else time.monotonic() + self.batch_timeout
        for thread in self.pipeline:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise StageTimeout(
                    f"an earlier inspect's batch is still in the worker after "
                    f"{self.batch_timeout:g} s; the engine may be hung (carry on with a new "
                    "process)"
                )

    def _end(self) -> None:
        """This ``inspect`` is over: its arrays are dropped (those of a loop left early
        would stay referenced) and another may start."""
        self.arrays.arrays.clear()
        self.owner = None
        self.inspecting.release()

    def _tasks(self, items: list[str | Path | np.ndarray]) -> list[Task]:
        """The batches of ``items``, their arrays put where the array decoder finds them,
        and the decoder they need chosen."""
        in_memory = [isinstance(item, np.ndarray) for item in items]
        if any(in_memory) and not all(in_memory):
            raise PsicbatchError("give files or arrays in one call, not both")
        names: list[tuple[int, Path]] = []
        for index, item in enumerate(items):
            if isinstance(item, np.ndarray):
                names.append((index, Path(f"<array {index}>")))
                self.arrays.arrays[str(names[-1][1])] = item
            elif isinstance(item, str | os.PathLike):
                names.append((index, Path(item)))
            else:
                kind = type(item).__name__
                raise PsicbatchError(f"image {index}: give a path or a numpy array, not a {kind}")
        self.worker.decoder = self.arrays if items and all(in_memory) else self.files_decoder
        return [
            (number, names[start : start + self.batch_size])
            for number, start in enumerate(range(0, len(names), self.batch_size))
        ]

    def close(self) -> None:
        self.files_decoder.close()
        self.arrays.close()

    def __enter__(self) -> Inspector:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
