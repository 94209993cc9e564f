"""Calls with a wall-clock limit, in daemon threads a stuck call cannot hold up.

A pathological file must not stall a worker forever, and Python cannot stop a thread:
each call runs in a daemon thread, at most ``threads`` at a time; one still running at
its limit is abandoned (its result discarded, its slot given to the next call), and the
process can still exit.

Threads that finished a call wait a while for the next instead of ending: with a fresh
thread for each file, a run's PIL decoding was 1.1-1.2 times slower
(``benchmarks/limited_reads.py``), and files are read by the thousand. An abandoned
thread that finishes late is reused too.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

IDLE_SECONDS = 30.0  # an idle thread ends when no call came for this long
BUSY_NAME = "psicbatch-limited"  # what ``shutdown`` counts as psicbatch's threads at exit
IDLE_NAME = "idle-limited"  # holds nothing: the process exits normally beside it


class TimeLimitExceeded(Exception):
    """A call ran past its limit and was abandoned."""


class _CallThread:
    """A daemon thread running the calls handed to it one at a time."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=BUSY_NAME, daemon=True).start()

    def _serve(self) -> None:
        this = threading.current_thread()
        while True:
            try:
                call = self.calls.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with _lock:
                    if self in _idle:  # no call was handed over meanwhile
                        _idle.remove(self)
                        return
                continue  # one was handed over as the wait ended: it is queued
            this.name = BUSY_NAME
            call()
            this.name = IDLE_NAME
            with _lock:
                _idle.append(self)


_lock = threading.Lock()
_idle: list[_CallThread] = []


def _forget_idle_threads() -> None:
    """A forked child has none of its parent's threads, only their records."""
    global _lock
    _lock = threading.Lock()
    _idle.clear()


os.register_at_fork(after_in_child=_forget_idle_threads)


def _start(call: Callable[[], None]) -> None:
    """Run ``call`` in an idle thread (the one idle the shortest time), or a new one."""
    with _lock:
        thread = _idle.pop() if _idle else None
    (thread or _CallThread()).calls.put(call)


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
            _start(partial(body, index))
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
