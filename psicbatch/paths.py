"""File names as the OS gives them.

POSIX file names are bytes and need not be valid UTF-8 (names from Windows shares and old
cameras often are not). Python carries such names in ``str`` with ``surrogateescape``;
they cannot be written to Parquet strings as they are. Each row therefore stores the name
twice: readable (invalid bytes shown as U+FFFD) and as the exact bytes, so a row always
says which file it is.
"""

from __future__ import annotations

import os
from pathlib import Path


def path_bytes(path: os.PathLike | str) -> bytes:
    """The file name exactly as the OS knows it."""
    return os.fsencode(path)


def readable_path(path: os.PathLike | str) -> str:
    """The file name as valid UTF-8 text (undecodable bytes become U+FFFD), for display."""
    return os.fsencode(path).decode("utf-8", "replace")


def input_key(path: os.PathLike | str) -> bytes:
    """What identifies an input across runs: its absolute path, as bytes (the same file
    given as a relative or an absolute path is one input)."""
    return os.fsencode(os.path.abspath(path))


def path_from_bytes(raw: bytes) -> Path:
    """The path a stored ``path_bytes`` value names."""
    return Path(os.fsdecode(raw))
