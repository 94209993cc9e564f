"""Running the same decode and inference as Ray Data stages, on one machine or a cluster.

The input list becomes a Ray dataset; ``map_batches`` runs an actor pool whose actors each
hold one ``Worker`` (decoder + engine, ``num_gpus=1`` each on GPU clusters) and run one
batch per stage at once, overlapping decoding, inference and post-processing, and results
stream back in input order to the driver, which writes them with the same crash-safe
writer as local runs: same schema, same error rows, same ``--resume``. Files are read
inside the actors rather than with ``ray.data.read_binary_files``, because one unreadable
file would fail a Ray read task, losing the per-file error isolation. As for local
workers, ``--batch-timeout`` seconds without a batch or progress from the actors
(``ray_progress``) stop the run as hung (Ray would wait for a hung actor for ever), and
SIGINT or SIGTERM saves the rows computed.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Generator, Iterator
from functools import partial
from typing import Any

import pyarrow as pa

from psicbatch.engines.spec import EngineSpec
from psicbatch.errors import PsicbatchError, error_line
from psicbatch.paths import path_bytes, path_from_bytes
from psicbatch.run.executors import ENGINE_OPEN_SECONDS
from psicbatch.run.failures import worker_failure
from psicbatch.run.heartbeat import Heartbeat, TileProgress, tell_every
from psicbatch.run.options import RunOptions
from psicbatch.run.output import KEY_COLUMN, PART_SCHEMA
from psicbatch.run.ray_progress import actor_heartbeat, beats_from, start_board
from psicbatch.run.shutdown import before_exit, stop_handlers_kept
from psicbatch.run.stages import staged
from psicbatch.run.worker import LATENCY, STAGE_COUNT, Task, Worker

_RAY_AUTHENTICATION_SETUP = "ray._private.authentication.authentication_token_setup"
REACH_SECONDS = 5.0  # how long a cluster's head may take to accept a connection
CLOSE_SECONDS = 5.0  # how long a stopped run waits for the thread reading from Ray

# Rows as actors return them; the driver adds each input's key, as for local workers, and
# takes their stage times out (each row carries its share of its batch's stage seconds,
# and its batch's latency: Ray may regroup rows into other batches on their way).
STAGE_SECONDS = "stage_seconds"
RAY_SCHEMA = PART_SCHEMA.remove(PART_SCHEMA.get_field_index(KEY_COLUMN)).append(
    pa.field(STAGE_SECONDS, pa.map_(pa.string(), pa.float64()))
)


def ray_results(
    tasks: list[Task],
    spec: EngineSpec,
    options: RunOptions,
    devices: list[str],
    address: str | None = None,
    tiles: TileProgress | None = None,
) -> Iterator[tuple[list[dict[str, Any]], dict[str, float]]]:
    """(rows, stage seconds) of every batch in input order, from Ray actors; ``tiles`` is
    told how far their tiled batches are."""
    # A thread stuck in Ray when the run stops would start a new local Ray, without
    # the run to stop it, once the run shut Ray down: no automatic start in this process.
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    try:
        import ray
        import ray.data
    except ImportError:
        raise PsicbatchError("--executor ray needs Ray: pip install 'psicbatch[ray]'") from None
    items = [
        {"input_index": i, "path_bytes": path_bytes(p)} for _, batch in tasks for i, p in batch
    ]
    if not items:  # all done already (a resume): no Ray to start
        return iter(())
    _quiet_ray_console()
    if address is not None:  # answering, even where this process is connected already
        check_reachable(address)
    started = not ray.is_initialized()
    if started:
        try:
            with stop_handlers_kept():
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
        except (ConnectionError, ValueError) as error:  # no cluster there, or no address
            cluster = f"the Ray cluster at --address {address}" if address else "a local Ray"
            raise PsicbatchError(f"cannot connect to {cluster} ({error})") from None
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    # A Ray this run started is shut down however the run ends: its processes would
    # outlive a process that exits without its teardown, as one with a stuck thread does.
    shut_down = ray.shutdown if started else _leave_running
    gpus = 1 if devices[0].startswith("cuda") else 0
    count = len(devices)
    board, every = start_board(ray), tell_every(options.batch_timeout)

    class Inspector:
        """One decoder and engine per actor, created once and reused for every batch."""

        def __init__(self) -> None:
            device = "cuda:0" if gpus else "cpu"  # Ray assigns each actor its own GPU
            with _said_by_this_actor():
                threads = None if gpus else 1
                heartbeat = actor_heartbeat(board, every)
                self.worker = Worker(spec, options, device, threads, heartbeat)

        def __call__(self, batch: pa.Table) -> pa.Table:
            items = list(
                zip(
                    batch.column("input_index").to_pylist(),
                    map(path_from_bytes, batch.column("path_bytes").to_pylist()),
                    strict=True,
                )
            )
            with _said_by_this_actor():
                rows, times = self.worker.timed_rows(items)
            shares = _shared_out(times, len(rows))
            for row in rows:
                row[STAGE_SECONDS] = shares
            return pa.Table.from_pylist(rows, schema=RAY_SCHEMA)

    # One call per stage at once per actor (Worker.rows lets each stage take one batch at a
    # time), so decoding, inference and post-processing overlap as in local workers.
    pool = ray.data.ActorPoolStrategy(
        size=count, max_concurrent_calls_per_actor=STAGE_COUNT, enable_true_multi_threading=True
    )
    dataset = ray.data.from_items(items).map_batches(
        Inspector,
        batch_size=options.batch_size,
        batch_format="pyarrow",
        compute=pool,
        num_gpus=gpus,
        num_cpus=1,
    )
    batches = iter(dataset.iter_batches(batch_size=options.batch_size, batch_format="pyarrow"))
    progress = partial(beats_from, ray, board, every=every, tiles=tiles)
    return _watched(batches, options.batch_timeout, progress, shut_down)


def _watched(
    batches: Generator[pa.Table, None, None],
    timeout: float,
    progress: Callable[[Heartbeat], contextlib.AbstractContextManager],
    shut_down: Callable[[], None],
) -> Iterator[tuple[list[dict[str, Any]], dict[str, float]]]:
    """Each batch's rows, read from Ray in a thread of their own, so that waiting more
    than ``timeout`` without one or the actors' ``progress`` (for the first, while the
    actors open their engines, at least ``ENGINE_OPEN_SECONDS``) stops the run as hung;
    then ``shut_down``, however it ends."""
    opening = max(timeout, ENGINE_OPEN_SECONDS)
    reader = _python_rows(batches)
    heartbeat = Heartbeat()
    rows = staged(
        reader,
        _unchanged,
        timeout=timeout,
        name="batch",
        first_timeout=opening,
        heartbeat=heartbeat,
    )
    try:
        with progress(heartbeat):
            yield from rows
    except PsicbatchError:
        raise
    except Exception as error:  # Ray's, holding the actor's traceback as text
        raise PsicbatchError(_actors_line(error)) from error
    finally:
        rows.close()  # the reading thread leaves once its batch from Ray comes
        if _closed_when_free(reader, CLOSE_SECONDS):
            # Ray's iterator, which ends its execution and actors, and every table from
            # Ray's object store, before Ray: a table freed after Ray's shutdown (or Ray's
            # iterator closed after it) ended the process at once, before its rows were saved.
            batches.close()
            gc.collect()
            shut_down()
        else:  # shut down now, Ray would let the thread stuck in it end the process at once
            before_exit(shut_down)


def _python_rows(
    batches: Iterator[pa.Table],
) -> Generator[tuple[list[dict[str, Any]], dict[str, float]], None, None]:
    """Each batch as Python rows, with its stage seconds, as soon as it comes: no table
    from Ray's object store is held past the reading of the next."""
    for batch in batches:
        rows = batch.to_pylist()
        yield rows, _gathered([dict(row.pop(STAGE_SECONDS)) for row in rows])


def _shared_out(times: dict[str, float], rows: int) -> dict[str, float]:
    """A batch's stage seconds shared out over its rows, each with the batch's latency."""
    return {
        stage: seconds if stage == LATENCY else seconds / rows for stage, seconds in times.items()
    }


def _gathered(shares: list[dict[str, float]]) -> dict[str, float]:
    """The stage seconds of rows, summed; their latency, averaged (Ray returns an actor's
    batch whole, so this is its latency, unless Ray cut or joined batches on their way)."""
    times: dict[str, float] = {}
    for share in shares:
        for stage, seconds in share.items():
            times[stage] = times.get(stage, 0.0) + seconds
    if LATENCY in times:
        times[LATENCY] /= len(shares)
    return times


def _unchanged(rows: Any) -> Any:
    return rows


def _closed_when_free(reader: Generator[Any, None, None], seconds: float) -> bool:
    """Whether ``reader`` was closed once the reading thread had left it, within
    ``seconds`` (a thread hung in Ray never does)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            reader.close()
            return True
        except ValueError:  # "generator already executing": the thread is still in it
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


@contextlib.contextmanager
def _said_by_this_actor() -> Iterator[None]:
    """An actor's error as one line naming its machine (on a cluster, a file the driver
    reads that a node cannot is the likely cause), for ``_actors_line`` to find."""
    where = f"a Ray actor on {socket.gethostname()}"
    try:
        yield
    except PsicbatchError as error:
        raise PsicbatchError(f"{where}: {error}") from None
    except Exception as error:
        raise PsicbatchError(worker_failure(where, error)) from None


def _actors_line(error: Exception) -> str:
    """The line an actor said (``_said_by_this_actor``), found in the text of Ray's
    error, which wraps the actor's as a formatted traceback, not as an object."""
    said = re.findall(r"^psicbatch\.errors\.\w+: (.+)$", str(error), re.MULTILINE)
    return said[-1] if said else f"the Ray run failed: {error_line(error)}"


def _leave_running() -> None:
    """A Ray this run did not start is left to whoever started it."""


def _quiet_ray_console() -> None:
    """Ray Data writes each dataset's plan and progress (INFO), the errors of its own
    teardown (WARNING) and an actor's error (ERROR), with tracebacks, to the console,
    between psicbatch's progress bar and its one-line errors (an actor's is one of them,
    ``_actors_line``); they stay in Ray's session log (``ray-data.log``). Ray's start of a
    local Ray warns that it chose token authentication, its default for it (errors of
    authentication are still said)."""
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.CRITICAL)
    logging.getLogger(_RAY_AUTHENTICATION_SETUP).setLevel(logging.ERROR)


def check_reachable(address: str) -> None:
    """A cluster address (HOST:PORT) at which nothing answers, refused at once: Ray retries
    it for minutes inside native code, where Ctrl-C and SIGTERM cannot stop it. Other
    forms (``auto``, ``ray://``) are left to Ray."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or "://" in address:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_SECONDS):
            pass
    except OSError as error:
        raise PsicbatchError(
            f"cannot connect to the Ray cluster at --address {address} ({error.strerror or error})"
        ) from None
