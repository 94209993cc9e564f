"""Calls into a folder that may stop answering, each from a daemon thread of its own.

On a network share that stops answering a call waits in a system call, where Python
runs no signal handler: made from the main thread, it held a run or a watch without a
word, deaf to Ctrl-C and SIGTERM. ``waited_for`` makes the call in a thread of its own
(a fresh one each time: it may never come back) and waits for it in short looks, so the
caller hears its stops and tells how long the call has waited. Work that must stay in
its own thread (a stop must not leave it running) is told of by a ``SilenceWatch``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_future
from typing import Any, TypeVar

T = TypeVar("T")


def in_a_thread(call: Callable[[], Any], name: str) -> Future:
    """``call()`` in a daemon thread, its result or exception in the future returned."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as error:  # raised where the result is taken
            future.set_exception(error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def waited_for(
    call: Callable[[], T],
    told: Callable[[float | None], None],
    name: str,
    patience: float,
    silent_after: float,
) -> T:
    """``call()``'s result, from a thread named ``name``, looked at every ``patience``
    seconds; ``told`` hears how long it has waited from ``silent_after`` seconds on, and
    None once it is done."""
    began = time.monotonic()
    future = in_a_thread(call, name)
    while wait_for_future([future], timeout=patience).not_done:
        waited = time.monotonic() - began
        if waited >= silent_after:
            told(waited)
    told(None)
    return future.result()


class SilenceWatch:
    """Within its ``with`` block, a thread of its own tells ``told`` how long the work has
    not moved on (``heard()``) from ``silent_after`` seconds on, looking every
    ``patience`` seconds, and None once it moves again or the block ends. The work stays
    in its caller's thread: a stop there must not leave it running, as a thread would."""

    def __init__(
        self,
        told: Callable[[float | None], None],
        name: str,
        patience: float,
        silent_after: float,
    ) -> None:
        self.told, self.patience, self.silent_after = told, patience, silent_after
        self.last_heard = time.monotonic()
        self.silent = False  # whether ``told`` last heard of a wait
        self.lock = threading.Lock()  # a look and a hearing tell in the order they happen
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._look, name=name, daemon=True)

    def heard(self) -> None:
        """The work moved on: the folder answers."""
        with self.lock:
            self.last_heard = time.monotonic()
            if self.silent:
                self.silent = False
                self.told(None)

    def __enter__(self) -> SilenceWatch:
        self.last_heard = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended.set()
        self.thread.join()
        self.heard()

    def _look(self) -> None:
        while not self.ended.wait(self.patience):
            with self.lock:
                waited = time.monotonic() - self.last_heard
                if waited >= self.silent_after:
                    self.silent = True
                    self.told(waited)
