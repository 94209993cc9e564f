"""Where workers run: in this process (one worker) or in spawned processes (several).

Each spawned GPU worker sees only its own GPU (``CUDA_VISIBLE_DEVICES``), so every
library in it (torch, DALI, ONNX Runtime, TensorRT) uses that GPU as device 0. The
parent hands out batches and yields results in input order, with a window of several
batches per worker in flight, so one slow batch does not stall the other workers. Workers
tell the parent of their progress (``Heartbeat``: with the tiles of a tiled batch
inferred so far) about once a second, or four times per ``batch_timeout`` if that is
shorter; ``batch_timeout`` seconds without a result or progress from any worker stop the
run with a clear error.
Whenever the run stops early (an error, a hung worker, a signal) the workers are
terminated at once; a worker also ends by itself when its parent dies.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Iterator
from functools import partial
from itertools import islice
from typing import Any

from psicbatch.cpus import available_cpus
from psicbatch.engines.spec import EngineSpec
from psicbatch.errors import PsicbatchError
from psicbatch.run.failures import said_in_one_line
from psicbatch.run.heartbeat import Heartbeat, TileProgress, Tiles, tell_every
from psicbatch.run.options import RunOptions
from psicbatch.run.shutdown import die_with_parent
from psicbatch.run.worker import Rows, Task, Worker

BatchResult = tuple[Rows, dict[str, float]]
# A worker's message, (PROGRESS, worker number, Tiles): work moved on, though no batch is
# done yet.
PROGRESS = "progress"
IN_FLIGHT_PER_WORKER = 4
# Starting a worker (imports, loading or deserialising the engine) may take far longer
# than a batch; --batch-timeout applies to batches, this at least to the start.
ENGINE_OPEN_SECONDS = 300.0


def local_results(
    tasks: list[Task],
    spec: EngineSpec,
    options: RunOptions,
    devices: list[str],
    tiles: TileProgress | None = None,
) -> Iterator[BatchResult]:
    """(rows, stage seconds) of every batch in input order, from workers on this machine;
    their engines are open when it returns (a run's progress line says so). ``tiles`` is
    told how far the workers' tiled batches are."""
    if len(devices) == 1:
        heartbeat = tiles.heartbeat() if tiles is not None else None
        worker = Worker(spec, options, devices[0], available_cpus(), heartbeat)
        return _in_this_process(worker, tasks, options.batch_timeout)
    return _parallel_results(tasks, spec, options, devices, tiles)


def _in_this_process(worker: Worker, tasks: list[Task], timeout: float) -> Iterator[BatchResult]:
    """The one local worker's batches; its unexpected error is the one line a worker
    process reports, not a traceback."""
    with said_in_one_line(f"worker on {worker.device}"):
        for _, rows, times in worker.process(iter(tasks), timeout):
            yield rows, times


def worker_environment(device: str, parent_mask: str | None = None) -> tuple[dict[str, str], str]:
    """(environment to set, device to open) for a spawned worker on ``device``: a GPU
    worker sees only its GPU, which is then ``cuda:0`` inside the worker.

    ``cuda:N`` is the N-th GPU this process sees. Under a scheduler that already masks
    GPUs (SLURM or Kubernetes set ``CUDA_VISIBLE_DEVICES=2,3``, or GPU UUIDs), that is the
    N-th entry of the parent's mask (``parent_mask``, default: this process's), kept as
    written, so a worker never leaves its allocation.
    """
    if not device.startswith("cuda"):
        return {}, device
    index = int(device.partition(":")[2] or "0")
    if parent_mask is None:
        parent_mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if parent_mask is None:
        return {"CUDA_VISIBLE_DEVICES": str(index)}, "cuda:0"
    visible = [entry.strip() for entry in parent_mask.split(",") if entry.strip()]
    if index >= len(visible):
        raise PsicbatchError(
            f"{device}: this process sees {len(visible)} GPU(s) "
            f"(CUDA_VISIBLE_DEVICES={parent_mask!r}); --device counts from 0 within them"
        )
    return {"CUDA_VISIBLE_DEVICES": visible[index]}, "cuda:0"


def _parallel_results(
    tasks: list[Task],
    spec: EngineSpec,
    options: RunOptions,
    devices: list[str],
    tiles: TileProgress | None,
) -> Iterator[BatchResult]:
    context = multiprocessing.get_context("spawn")
    task_queue = context.Queue()
    result_queue = context.Queue()
    for device in devices:  # a device outside the allocation fails here, not in a worker
        worker_environment(device)
    # Each worker's share of the CPUs: its torch threads on the CPU, its decoding threads.
    threads = max(1, available_cpus() // len(devices))
    workers = []
    for number, device in enumerate(devices):
        queues = (task_queue, result_queue)
        arguments = (spec, options, device, threads, number, *queues, os.getpid())
        workers.append(context.Process(target=_worker_main, args=arguments, daemon=True))
    try:
        for process in workers:
            process.start()
        opening = max(options.batch_timeout, ENGINE_OPEN_SECONDS)
        for _ in workers:  # each worker reports once its engine is loaded
            receive(result_queue, workers, opening, "opening its engine")
    except BaseException:
        _stop_now(workers, task_queue, result_queue)
        raise
    return _ordered(tasks, task_queue, result_queue, workers, options.batch_timeout, tiles)


def _ordered(
    tasks: list[Task],
    task_queue: Any,
    result_queue: Any,
    workers: list,
    timeout: float,
    tiles: TileProgress | None,
) -> Iterator[BatchResult]:
    """Keep a window of batches in flight; yield results in batch order."""
    feed = iter(tasks)
    window = IN_FLIGHT_PER_WORKER * len(workers)
    sent = 0
    for task in islice(feed, window):
        task_queue.put(task)
        sent += 1
    finished: dict[int, BatchResult] = {}
    next_number = 0
    try:
        while next_number < len(tasks):
            waiting_for = f"batch {next_number}"
            number, rows, times = receive(result_queue, workers, timeout, waiting_for, tiles)
            finished[number] = (rows, times)
            while next_number in finished:
                yield finished.pop(next_number)
                next_number += 1
            # Results waiting for an earlier batch still count against the window.
            while sent - next_number < window and (queued := next(feed, None)) is not None:
                task_queue.put(queued)
                sent += 1
    except BaseException:  # an error, a hung worker, a signal, or the consumer stopping
        _stop_now(workers, task_queue, result_queue)
        raise
    for _ in workers:
        task_queue.put(None)
    _join_all(workers, seconds=10)
    _stop_now(workers, task_queue, result_queue)


def _stop_now(workers: list, task_queue: Any, result_queue: Any) -> None:
    """Terminate workers still alive and let the queues go without flushing: a hung
    worker never reads what is left in the task queue, and waiting for that would keep
    this process alive."""
    for process in workers:
        if process.is_alive():
            process.terminate()
            _resume(process)  # a stopped process holds SIGTERM until it runs again
    _join_all(workers, seconds=5)
    for process in workers:
        if process.is_alive():
            process.kill()
    for channel in (task_queue, result_queue):
        channel.cancel_join_thread()
        channel.close()


def _join_all(workers: list, seconds: float) -> None:
    """Wait up to ``seconds`` for all workers together, not for each in turn, so that
    a run's exit waits at most that long however many workers it has."""
    deadline = time.monotonic() + seconds
    for process in workers:
        process.join(timeout=max(0.0, deadline - time.monotonic()))


def _resume(process: Any) -> None:
    """SIGCONT to a process that may be stopped, so that the SIGTERM it was sent ends it
    now rather than at the kill after the grace period."""
    with contextlib.suppress(ProcessLookupError, AttributeError):  # gone, or no SIGCONT
        os.kill(process.pid, signal.SIGCONT)


def receive(
    result_queue: Any,
    workers: list,
    timeout: float,
    waiting_for: str,
    tiles: TileProgress | None = None,
) -> Any:
    """The next message from any worker but progress, which ``tiles`` is told; a clear
    error when a worker died, failed, or sent nothing, not even progress, for
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            message = result_queue.get(timeout=min(1.0, timeout))
            if isinstance(message, tuple) and message[:1] == (PROGRESS,):
                deadline = time.monotonic() + timeout
                if tiles is not None:
                    tiles.tell(*message[1:])
                continue
        except queue.Empty:
            dead = [p for p in workers if not p.is_alive()]
            if dead:
                raise PsicbatchError(
                    f"a worker process stopped unexpectedly ({_ended(dead[0].exitcode)})"
                ) from None
            if time.monotonic() > deadline:
                raise PsicbatchError(
                    f"no result or progress from any worker for {timeout:g} s while waiting "
                    f"for {waiting_for}; a worker may be hung (raise --batch-timeout if its "
                    "work is legitimately this slow)"
                ) from None
            continue
        if isinstance(message, tuple) and message and message[0] == "failed":
            raise PsicbatchError(message[1])
        return message


def _ended(exit_code: int | None) -> str:
    """How a worker process ended, in words: its exit code, or the signal that ended it
    (SIGKILL, unasked, is most often the kernel's out-of-memory killer)."""
    if exit_code is None or exit_code >= 0:
        return f"exit code {exit_code}"
    try:
        name = signal.Signals(-exit_code).name
    except ValueError:
        return f"killed by signal {-exit_code}"
    if name == "SIGKILL":
        return (
            "killed by SIGKILL, as the system does when memory runs out: fewer --workers "
            "or a smaller --batch-size need less"
        )
    return f"killed by {name}"


def _worker_main(
    spec: EngineSpec,
    options: RunOptions,
    device: str,
    threads: int,
    number: int,
    task_queue: Any,
    result_queue: Any,
    parent_pid: int,
) -> None:
    die_with_parent(parent_pid)
    environment, local_device = worker_environment(device)
    os.environ.update(environment)  # before anything initialises CUDA in this process
    try:  # an error is reported to the parent, which stops the run cleanly
        with said_in_one_line(f"worker on {device}"):
            every = tell_every(options.batch_timeout)
            heartbeat = Heartbeat(partial(_tell_progress, result_queue, number), every)
            worker = Worker(spec, options, local_device, threads, heartbeat)
            result_queue.put("ready")
            for message in worker.process(iter(task_queue.get, None)):
                result_queue.put(message)
    except PsicbatchError as error:
        result_queue.put(("failed", str(error)))


def _tell_progress(result_queue: Any, number: int, tiles: Tiles | None) -> None:
    result_queue.put((PROGRESS, number, tiles))
