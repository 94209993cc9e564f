"""Progress told by Ray actors to the driver, so that ``--batch-timeout`` counts time
without progress under Ray as it does for local workers.

A batch of large images through a tiled model can take many minutes, longer than the
timeout, while its engine calls move on; timed per batch, such a run was stopped as
hung. Each actor's worker beats a heartbeat that counts on a small board actor (about
once a second), with how far its tiled batch is; a thread of the driver reads the board
as often, beats the driver's heartbeat when the count moved, and passes the tiles on to
the run's progress line.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

from psicbatch.run.heartbeat import Heartbeat, TileProgress, Tiles


class ProgressBoard:
    """How many beats the actors told, and each one's tiled batch under way: made a Ray
    actor (without a CPU of its own) by ``start_board``."""

    def __init__(self) -> None:
        self.beats = 0
        self.tiles: dict[str, Tiles] = {}

    def tell(self, actor: str, tiles: Tiles | None) -> None:
        self.beats += 1
        if tiles is None:
            self.tiles.pop(actor, None)
        else:
            self.tiles[actor] = tiles

    def read(self) -> tuple[int, dict[str, Tiles]]:
        return self.beats, self.tiles


def start_board(ray: Any) -> Any:
    """A board actor in the driver's Ray job."""
    return ray.remote(num_cpus=0)(ProgressBoard).remote()


def actor_heartbeat(board: Any, every: float) -> Heartbeat:
    """A heartbeat for an actor's worker (made in the actor), telling ``board`` at most
    every ``every`` s."""
    return Heartbeat(partial(_tell, board, f"{socket.gethostname()}:{os.getpid()}"), every)


def _tell(board: Any, actor: str, tiles: Tiles | None) -> None:
    board.tell.remote(actor, tiles)  # not waited for: an actor's work never waits on it


@contextlib.contextmanager
def beats_from(
    ray: Any, board: Any, heartbeat: Heartbeat, every: float, tiles: TileProgress | None
) -> Iterator[None]:
    """While inside, ``heartbeat`` beats whenever the board's count moved, and ``tiles``
    is told that the actors are at work and of their tiled batches; the board is read
    every ``every`` s by a thread that leaves (within one reading) on the way out, before
    the caller shuts Ray down. Once every batch is in, nothing is under way, whatever the
    last reading said."""
    leaving = threading.Event()
    reading = max(every, 1.0)  # the longest one reading may take

    def read() -> None:
        seen = 0
        under_way: dict[str, Tiles] = {}
        while not leaving.wait(every):
            try:
                count, told = ray.get(board.read.remote(), timeout=reading)
            except Exception:  # a slow answer or a Ray shutting down: read again
                continue
            if count != seen:
                seen = count
                heartbeat.beat()
                if tiles is not None:
                    tiles.at_work()
            if tiles is not None:
                for actor in under_way.keys() | told.keys():
                    tiles.tell(actor, told.get(actor))
                under_way = told

    reader = threading.Thread(target=read, name="psicbatch-ray-progress", daemon=True)
    reader.start()
    try:
        yield
    finally:
        leaving.set()
        reader.join(timeout=reading + 1.0)
    if tiles is not None:
        tiles.clear()
