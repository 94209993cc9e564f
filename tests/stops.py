"""A stopping signal sent to the test's own process, for code that must not lose it."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest


def main_thread_only() -> None:
    """Skip a test that sends itself a signal where it does not run in the main thread:
    Python runs signal handlers there only, so the signal would end the process."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")


def send_stop(number: int = signal.SIGTERM) -> None:
    """Signal this process and wait here for the handler (see ``main_thread_only``)."""
    os.kill(os.getpid(), number)
    time.sleep(1)  # the handler raises within this sleep
