"""When a worker last made progress, so that a slow batch is told from a hung worker.

``--batch-timeout`` stops a run whose worker has made no progress for that long. Timing
whole batches could not tell a slow batch from a hung one: a batch of large images through
a tiled model on a CPU can take many minutes while its engine calls finish one after
another, and such a run was stopped as hung (and its resume stopped at the same batch).
Each stage beats when it finishes a piece of work (a batch decoded, an engine call, a
batch's masks or rows); the watcher measures the silence since the last beat. The same
beats carry how far a tiled batch's inference has gone, for the progress line: such a
batch's bar would otherwise stand still for minutes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

TELL_EVERY = 1.0  # seconds: at most one progress message per second to a parent process


def tell_every(timeout: float) -> float:
    """Seconds between progress messages: often enough that even a short
    ``--batch-timeout`` sees several."""
    return min(TELL_EVERY, timeout / 4)


class Tiles(NamedTuple):
    """How far the inference of tiled batches is, where a batch takes several engine
    calls: tiles through the engine, of how many, and the images' worth they make (a
    progress bar's share of the batches' images). Sums add up field by field."""

    inferred: int
    total: int
    images: float


class Heartbeat:
    """The time of the last progress, shared by a worker's stage threads.

    ``listener``, where given, is called with ``tiles`` on a beat at most every ``every``
    seconds, and at once when a tiled batch's inference begins or ends: a spawned
    worker's way to tell its parent, which watches it from another process, and a run's
    way to show a tiled batch's progress.
    """

    def __init__(
        self, listener: Callable[[Tiles | None], None] | None = None, every: float = TELL_EVERY
    ) -> None:
        self.last = time.monotonic()
        self._listener, self._every = listener, every
        self._told = float("-inf")
        self.tiles: Tiles | None = None  # of the batch in inference
        # Held while ``tiles`` changes and while it is told, so that what the listener
        # hears last is what is so: no finished batch's count lingers on a progress line.
        self._lock = threading.Lock()

    def beat(self) -> None:
        self._beat(at_once=False)

    def tiles_inferred(self, done: int, total: int, images: int) -> None:
        """An engine call of a tiled batch of ``images`` finished: ``done`` of its
        ``total`` tiles."""
        with self._lock:
            tiles = Tiles(done, total, images * done / total) if done < total else None
            began_or_ended = (tiles is None) != (self.tiles is None)
            self.tiles = tiles
        self._beat(at_once=began_or_ended)

    def _beat(self, at_once: bool) -> None:
        now = time.monotonic()
        self.last = now  # one float: assigning it is atomic, no lock needed
        if self._listener is not None and (at_once or now - self._told >= self._every):
            with self._lock:
                self._told = now
                self._listener(self.tiles)

    def silent_since(self, began: float) -> float:
        """When the silence began: the last beat, or ``began`` if that is later."""
        return max(began, self.last)


class TileProgress:
    """Tiles inferred in the tiled batches under way, per worker, summed for a run's
    progress line; ``on_change`` gets the sum (None: no tiled batch under way). Each
    call also says that the workers are at work."""

    def __init__(self, on_change: Callable[[Tiles | None], None]) -> None:
        self._on_change = on_change
        self._by_worker: dict[int | str, Tiles] = {}
        self._at_work = False

    def tell(self, worker: int | str, tiles: Tiles | None) -> None:
        if self._by_worker.get(worker) == tiles:
            return
        if tiles is None:
            del self._by_worker[worker]
        else:
            self._by_worker[worker] = tiles
        self._on_change(self.total())

    def at_work(self) -> None:
        """The workers made progress, so their engines are open (Ray's actors say so in no
        other way): ``on_change`` hears it once, tiles or none."""
        if not self._at_work:
            self._at_work = True
            self._on_change(self.total())

    def clear(self) -> None:
        """Nothing is under way any more."""
        if self._by_worker:
            self._by_worker.clear()
            self._on_change(None)

    def heartbeat(self) -> Heartbeat:
        """The heartbeat of this process's one worker, telling this of its tiles (changes
        only, at most four times a second between a batch's start and end)."""
        return Heartbeat(partial(self.tell, 0), TELL_EVERY / 4)

    def total(self) -> Tiles | None:
        under_way = list(self._by_worker.values())
        if not under_way:
            return None
        return Tiles(*(sum(field) for field in zip(*under_way, strict=True)))
