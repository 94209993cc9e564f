"""Pipeline stages in background threads, joined by bounded queues.

``staged(items, function)`` applies ``function`` to each item in a thread of its own, at
most ``depth`` results ahead of the consumer: chaining stages makes every stage work on a
different batch at the same time while memory stays bounded. ``workers`` threads work
on consecutive items at once (results still in order), for a stage whose one item
cannot keep the machine busy: decoding a batch of 8 files on 16 cores waits for its
slowest file while half the cores idle. Exceptions travel to the consumer and are raised
there; a consumer that stops early stops the threads. With a timeout, a consumer waiting
longer than that for a result, or, given a ``Heartbeat``, that long since its last beat,
gets ``StageTimeout``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout  # TimeoutError from 3.11 on
from typing import Any

from psicbatch.errors import PsicbatchError
from psicbatch.run.heartbeat import Heartbeat

_DONE = object()
_POLL = 0.1  # seconds between looks at the stop flag
_SLICE = 1.0  # seconds between looks at the heartbeat while waiting for a result


class StageTimeout(PsicbatchError):
    """No result from a stage within the allowed time: something is hung."""


def staged(
    items: Iterable[Any],
    function: Callable[[Any], Any],
    depth: int = 2,
    timeout: float | None = None,
    name: str = "stage",
    workers: int = 1,
    heartbeat: Heartbeat | None = None,
    first_timeout: float | None = None,
    threads: list[threading.Thread] | None = None,
) -> Generator[Any, None, None]:
    """``function(item)`` for every item, computed in background threads, in order.

    With ``timeout``, waiting longer than that for one result raises ``StageTimeout``;
    with a ``heartbeat`` too, only that long without a result or a beat does. The first
    result may take ``first_timeout`` instead, where given (workers that open their
    engine as they start). ``threads``, where given, gets the stage's threads, for a
    caller that must know when they have ended.
    """
    stage = _Stage(items, function, depth, max(1, workers))
    started = stage.start(name)
    if threads is not None:
        threads.extend(started)
    try:
        waiting = timeout if first_timeout is None else first_timeout
        while True:
            patience = _Patience(waiting, heartbeat, name)
            waiting = timeout
            future = patience.wait(lambda seconds: stage.ready.get(timeout=seconds), queue.Empty)
            if future is _DONE:
                return
            patience.wait(future.exception, FutureTimeout)  # done; its own error raised below
            yield future.result()
    finally:
        stage.stop.set()


class _Patience:
    """Waiting for one result, in slices, until ``timeout`` seconds of silence: since the
    wait began, or since the heartbeat's last beat if that is later."""

    def __init__(self, timeout: float | None, heartbeat: Heartbeat | None, name: str) -> None:
        self.timeout, self.heartbeat, self.name = timeout, heartbeat, name
        self.began = time.monotonic()

    def wait(self, get: Callable[[float | None], Any], empty: type[Exception]) -> Any:
        """``get(seconds)``'s answer, where ``get`` raises ``empty`` if none came in time."""
        if self.timeout is None:
            return get(None)
        while True:
            quiet = (
                self.began if self.heartbeat is None else self.heartbeat.silent_since(self.began)
            )
            left = self.timeout - (time.monotonic() - quiet)
            if left <= 0:
                raise StageTimeout(self._message())
            try:
                return get(min(left, _SLICE))
            except empty:
                continue

    def _message(self) -> str:
        silence = "" if self.heartbeat is None else " and no progress"
        return (
            f"no {self.name} result{silence} within {self.timeout:g} s; the worker may be "
            "hung (raise --batch-timeout if its work is legitimately this slow)"
        )


class _Stage:
    """A producer thread handing out the items (each one's future to the consumer, in
    order, then the item to a worker) and ``workers`` threads computing them."""

    def __init__(
        self, items: Iterable[Any], function: Callable[[Any], Any], depth: int, workers: int
    ) -> None:
        self.items, self.function, self.workers = items, function, workers
        # Futures in order: ``depth`` results ahead of the consumer, beside those computed.
        self.ready: queue.Queue = queue.Queue(maxsize=depth + workers)
        self.jobs: queue.Queue = queue.Queue()
        self.stop = threading.Event()

    def start(self, name: str) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._produce, name=f"psicbatch-{name}")]
        threads += [
            threading.Thread(target=self._work, name=f"psicbatch-{name}-{number}")
            for number in range(self.workers)
        ]
        for thread in threads:
            thread.daemon = True
            thread.start()
        return threads

    def _put(self, value: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.ready.put(value, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self.items:
                future: Future = Future()
                if not self._put(future):
                    return
                self.jobs.put((future, item))
        except BaseException as error:  # handed to the consumer, raised there
            failed: Future = Future()
            failed.set_exception(error)
            self._put(failed)
            return
        finally:
            self._close_items()
        self._put(_DONE)

    def _close_items(self) -> None:
        """Close the items (a stage below, when stages are chained) as this stage stops,
        so that stage stops too: its generator would otherwise be closed only once nothing
        refers to it, and a consumer holding an error holds its frames, and them."""
        close = getattr(self.items, "close", None)
        if close is not None:
            close()

    def _work(self) -> None:
        while not self.stop.is_set():
            try:
                future, item = self.jobs.get(timeout=_POLL)
            except queue.Empty:
                continue
            try:
                future.set_result(self.function(item))
            except BaseException as error:
                future.set_exception(error)
