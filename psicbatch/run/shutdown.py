"""Stopping cleanly: on SIGINT or SIGTERM, on a hung worker, and when the parent dies.

A signal becomes an exception (``Stopped``) in the main thread, so every ``finally`` on
the way out runs: rows already computed are written, worker processes are terminated.
The process then exits with ``exit_code`` (130 for SIGINT, 143 for SIGTERM), without
waiting for threads that are stuck in native code (a hung decoder or engine): the
interpreter's own teardown would wait for them or abort on them. Worker processes end
with their parent even when it is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_SECONDS = 1.0
_asked: list[int] = []  # the signal that asked this process to stop, once one did
_before_exit: list[Callable[[], None]] = []  # ``before_exit``'s callbacks


class Stopped(BaseException):
    """The run was asked to stop by a signal (not an error: nothing is wrong with it)."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number


@contextlib.contextmanager
def signals_stop() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``Stopped`` in the main thread; a second
    signal while the first is being handled is ignored, so saving results completes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signal_number: int, frame: object) -> None:
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)
        _asked.append(signal_number)
        raise Stopped(signal_number)

    previous = {number: signal.signal(number, stop) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _asked.clear()


@contextlib.contextmanager
def stop_handlers_kept() -> Iterator[None]:
    """Within the block, a library may install its own SIGINT and SIGTERM handlers; after
    it, the ones in place before are back. Ray's, installed as it starts, end the process
    at once (exit code 15, or 134 after a native stack trace): the rows a stop saves
    would be lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            if handler is not None:  # None: not installed from Python, cannot be put back
                signal.signal(number, handler)


def raise_if_stopped() -> None:
    """Raise ``Stopped`` again where a signal asked for it and a library's own error took
    its place (an import it interrupted can read as a missing module): code that goes on
    after a failure calls this first, so a stop is never taken for a failure."""
    if _asked:
        raise Stopped(_asked[0])


def before_exit(callback: Callable[[], None]) -> None:
    """Call ``callback`` as the process exits (``exit_process``), once all else is done
    however it exits: the teardown of a library that a stuck thread is still inside (a
    local Ray's), which may end the process at once, waits until the results are saved."""
    _before_exit.append(callback)


def exit_process(code: int) -> None:
    """Exit with ``code``. When psicbatch's own threads are still alive (stuck in a
    decoder or engine call that cannot be interrupted), skip the interpreter's teardown,
    which would wait for them or abort in native destructors."""
    for callback in _before_exit:
        with contextlib.suppress(Exception):  # exiting regardless
            callback()
    stuck = [t for t in threading.enumerate() if t.name.startswith("psicbatch-") and t.is_alive()]
    if not stuck:
        sys.exit(code)
    exit_at_once(code)


def exit_at_once(code: int) -> None:
    """Flush the console and exit without the interpreter's teardown: for a process whose
    results are all on disk, where tearing down DALI's and torch's threads takes seconds."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def die_with_parent(parent_pid: int) -> None:
    """In a worker process: end when the parent process ends, however it ends.

    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); a
    watchdog thread covers other systems and a parent that died before this call.
    """
    with contextlib.suppress(Exception):  # not Linux, or no prctl: the watchdog remains
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(WATCHDOG_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="psicbatch-parent-watchdog", daemon=True).start()
