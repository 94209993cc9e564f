"""Files that appear whole or not at all."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(
    path: Path,
    write: Callable[[Path], object],
    suffix: str = "",
    rename: Callable[[Path, Path], object] = os.replace,
) -> None:
    """``write`` the file under a temporary name beside ``path`` (``.NAME`` + ``suffix``,
    by default ``.tmp-PID``), then ``rename`` it there: a reader or a crash never sees half
    a file, and a failed write leaves no temporary behind."""
    temporary = path.with_name(f".{path.name}{suffix or f'.tmp-{os.getpid()}'}")
    try:
        write(temporary)
        rename(temporary, path)
    finally:
        # On a read-only file system even removing a missing file fails: the write's own
        # error, raised already, is the one to report.
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
