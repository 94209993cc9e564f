"""When a worker last made progress, so that a slow batch is told from a hung worker.

``--batch-timeout`` stops a run whose worker has made no progress for that long. Timing
whole batches could not tell a slow batch from a hung one: a batch of large images through
a tiled model on a CPU can take many minutes while its engine calls finish one after
another, and such a run was stopped as hung (and its resume stopped at the same batch).
Each stage beats when it finishes a piece of work (a batch decoded, an engine call, a
batch's masks or rows); the watcher measures the silence since the last beat.
"""

from __future__ import annotations

import time
from collections.abc import Callable

TELL_EVERY = 1.0  # seconds: at most one progress message per second to a parent process


class Heartbeat:
    """The time of the last progress, shared by a worker's stage threads.

    ``listener``, where given, is called on a beat at most every ``every`` seconds: a
    spawned worker's way to tell its parent, which watches it from another process.
    """

    def __init__(
        self, listener: Callable[[], None] | None = None, every: float = TELL_EVERY
    ) -> None:
        self.last = time.monotonic()
        self._listener, self._every = listener, every
        self._told = float("-inf")

    def beat(self) -> None:
        now = time.monotonic()
        self.last = now  # one float: assigning it is atomic, no lock needed
        if self._listener is not None and now - self._told >= self._every:
            self._told = now
            self._listener()

    def silent_since(self, began: float) -> float:
        """When the silence began: the last beat, or ``began`` if that is later."""
        return max(began, self.last)
