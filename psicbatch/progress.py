"""One look for every long-running loop (a rich progress bar with a free-text status
field), and for the plain lines said beside it (``say``)."""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from psicbatch.run.shutdown import raise_if_stopped


def say(console: Console, line: str) -> None:
    """A line to the terminal as written, wrapped but never read as markup: file names and
    options hold brackets that rich would take for styles."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


class _Progress(Progress):
    """rich's Progress, whose ``stop`` ends a line on a console that is not a terminal
    (a log, a pipe) only where a bar was shown, and only once: an error before the first
    task is then one line, not an empty one and the error. Each step the main thread
    reports raises a stop again that the code it interrupted swallowed (a finalizer only
    prints an exception), so every loop with a bar ends on Ctrl-C or SIGTERM."""

    def advance(self, task_id: Any, advance: float = 1) -> None:
        _stop_if_asked()
        super().advance(task_id, advance)

    def update(self, task_id: Any, **changes: Any) -> None:
        _stop_if_asked()
        super().update(task_id, **changes)

    def stop(self) -> None:
        if not self.live.is_started:
            return
        if self.tasks:
            super().stop()
        else:
            self.live.stop()


def _stop_if_asked() -> None:
    """``raise_if_stopped`` in the main thread, the one a signal stops."""
    if threading.current_thread() is threading.main_thread():
        raise_if_stopped()


def progress_bar(quiet: bool = False, console: Console | None = None) -> Progress:
    """A Progress whose tasks may carry a ``status`` field (loss, images/s, ...)."""
    return _Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("<"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}", markup=False),  # may quote file names
        console=console or Console(stderr=True),
        disable=quiet,
    )
