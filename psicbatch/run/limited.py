"""Calls with a wall-clock limit, in daemon threads a stuck call cannot hold up.

A pathological file must not stall a worker forever, and Python cannot stop a thread:
each call runs in a daemon thread of its own, at most ``threads`` at a time; one still
running at its limit is abandoned (its result discarded, its slot given to the next
call), and the process can still exit.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any


class TimeLimitExceeded(Exception):
    """A call ran past its limit and was abandoned."""


def run_limited(
    calls: Sequence[Callable[[], Any]], threads: int, seconds: float
) -> list[Any | TimeLimitExceeded | BaseException]:
    """Each call's result, its exception, or ``TimeLimitExceeded``, in the calls' order;
    each call may run ``seconds`` from the moment it starts."""
    results: list[Any] = [None] * len(calls)
    finished: queue.Queue = queue.Queue()
    running: dict[int, float] = {}  # call index -> deadline
    waiting = list(range(len(calls)))[::-1]

    def body(index: int) -> None:
        try:
            finished.put((index, calls[index](), None))
        except BaseException as error:
            finished.put((index, None, error))

    while waiting or running:
        while waiting and len(running) < max(1, threads):
            index = waiting.pop()
            running[index] = time.monotonic() + seconds
            threading.Thread(
                target=body, args=(index,), name="psicbatch-limited", daemon=True
            ).start()
        try:
            index, value, error = finished.get(
                timeout=max(0.0, min(running.values()) - time.monotonic())
            )
        except queue.Empty:
            now = time.monotonic()
            for index in [i for i, deadline in running.items() if deadline <= now]:
                del running[index]
                results[index] = TimeLimitExceeded(f"took longer than {seconds:g} s")
            continue
        if index in running:  # an abandoned call finishing late is ignored
            del running[index]
            results[index] = error if error is not None else value
    return results


def call_limited(call: Callable[[], Any], seconds: float) -> Any:
    """``call()``'s result; raises its exception, or ``TimeLimitExceeded`` at the limit."""
    (result,) = run_limited([call], 1, seconds)
    if isinstance(result, BaseException):
        raise result
    return result
