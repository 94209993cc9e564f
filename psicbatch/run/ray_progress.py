"""Progress told by Ray actors to the driver, so that ``--batch-timeout`` counts time
without progress under Ray as it does for local workers.

A batch of large images through a tiled model can take many minutes, longer than the
timeout, while its engine calls move on; timed per batch, such a run was stopped as
hung. Each actor's worker beats a heartbeat that counts on a small board actor (about
once a second); a thread of the driver reads the count as often, and beats the driver's
heartbeat when it moved.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

from psicbatch.run.heartbeat import Heartbeat, Tiles


class ProgressBoard:
    """How many beats the actors told: made a Ray actor (without a CPU of its own) by
    ``start_board``."""

    def __init__(self) -> None:
        self.beats = 0

    def tell(self) -> None:
        self.beats += 1

    def count(self) -> int:
        return self.beats


def start_board(ray: Any) -> Any:
    """A board actor in the driver's Ray job."""
    return ray.remote(num_cpus=0)(ProgressBoard).remote()


def actor_heartbeat(board: Any, every: float) -> Heartbeat:
    """A heartbeat for an actor's worker, telling ``board`` at most every ``every`` s."""
    return Heartbeat(partial(_tell, board), every)


def _tell(board: Any, tiles: Tiles | None) -> None:
    board.tell.remote()  # not waited for: an actor's work never waits on the board


@contextlib.contextmanager
def beats_from(ray: Any, board: Any, heartbeat: Heartbeat, every: float) -> Iterator[None]:
    """While inside, ``heartbeat`` beats whenever the board's count moved, read every
    ``every`` s by a thread that leaves (within one reading) on the way out, before the
    caller shuts Ray down."""
    leaving = threading.Event()

    def read() -> None:
        seen = 0
        while not leaving.wait(every):
            try:
                count = ray.get(board.count.remote(), timeout=max(every, 1.0))
            except Exception:  # a slow answer or a Ray shutting down: read again
                continue
            if count != seen:
                seen = count
                heartbeat.beat()

    reader = threading.Thread(target=read, name="psicbatch-ray-progress", daemon=True)
    reader.start()
    try:
        yield
    finally:
        leaving.set()
        reader.join(timeout=max(every, 1.0) + 1.0)
