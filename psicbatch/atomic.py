"""Files that appear whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

NAME_MAX = 255  # bytes in one file name, on Linux's file systems


def write_atomically(
    path: Path,
    write: Callable[[Path], object],
    suffix: str = "",
    rename: Callable[[Path, Path], object] = os.replace,
) -> None:
    """``write`` the file under a temporary name beside ``path`` (``.NAME`` + ``suffix``,
    by default ``.tmp-PID``), then ``rename`` it there: a reader or a crash never sees half
    a file, and a failed write leaves no temporary behind."""
    temporary = _temporary(path, suffix or f".tmp-{os.getpid()}")
    try:
        write(temporary)
        rename(temporary, path)
    finally:
        # On a read-only file system even removing a missing file fails: the write's own
        # error, raised already, is the one to report.
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def _temporary(path: Path, suffix: str) -> Path:
    """``.NAME`` + ``suffix`` beside ``path``; where that would pass the 255 bytes a file
    name may have (an image named near that limit, whose mask is exported), a digest of
    the name stands for it."""
    name = f".{path.name}{suffix}"
    if len(os.fsencode(name)) > NAME_MAX:
        name = f".{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:32]}{suffix}"
    return path.with_name(name)
