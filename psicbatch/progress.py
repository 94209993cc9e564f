"""One look for every long-running loop: a rich progress bar with a free-text status field."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(quiet: bool = False, console: Console | None = None) -> Progress:
    """A Progress whose tasks may carry a ``status`` field (loss, images/s, ...)."""
    return Progress(
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
