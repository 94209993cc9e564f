"""One look for every long-running loop (a rich progress bar with a free-text status
field), and for the plain lines said beside it (``say``)."""

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


def say(console: Console, line: str) -> None:
    """A line to the terminal as written, wrapped but never read as markup: file names and
    options hold brackets that rich would take for styles."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def stop_progress(progress: Progress) -> None:
    """Stop a bar that is shown. rich's own ``stop`` also ends a line on a console that is
    not a terminal, shown or not: an error before the bar's first report would follow an
    empty line, and a second stop would add another."""
    if progress.live.is_started:
        progress.stop()


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
