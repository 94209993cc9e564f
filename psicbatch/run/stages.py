"""Pipeline stages in background threads, joined by bounded queues.

``staged(items, function)`` applies ``function`` to each item in a thread of its own, at
most ``depth`` results ahead of the consumer: chaining stages makes every stage work on a
different batch at the same time while memory stays bounded. Exceptions travel to the
consumer and are raised there; a consumer that stops early stops the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from psicbatch.errors import PsicbatchError

_DONE = object()


class StageTimeout(PsicbatchError):
    """No result from a stage within the allowed time: something is hung."""


def staged(
    items: Iterable[Any],
    function: Callable[[Any], Any],
    depth: int = 2,
    timeout: float | None = None,
    name: str = "stage",
) -> Iterator[Any]:
    """``function(item)`` for every item, computed in a background thread, in order.

    With ``timeout``, waiting longer than that for one result raises ``StageTimeout``.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set() or not put(function(item)):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            put(error)
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name=f"psicbatch-{name}", daemon=True)
    thread.start()
    try:
        while True:
            try:
                value = ready.get(timeout=timeout)
            except queue.Empty:
                raise StageTimeout(
                    f"no {name} result within {timeout:.0f} s; the worker may be "
                    "hung (raise --batch-timeout if batches are legitimately this slow)"
                ) from None
            if value is _DONE:
                return
            if isinstance(value, BaseException):
                raise value
            yield value
    finally:
        stop.set()
