"""Files that appear whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], object], suffix: str = "") -> None:
    """``write`` the file under a temporary name beside ``path`` (``.NAME`` + ``suffix``,
    by default ``.tmp-PID``), then rename it: a reader or a crash never sees half a file,
    and a failed write leaves no temporary behind."""
    temporary = path.with_name(f".{path.name}{suffix or f'.tmp-{os.getpid()}'}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
