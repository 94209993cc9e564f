"""Reading input files safely: regular files only, bounded reads, opening never blocks.

An input folder on a shared drive may hold named pipes, sockets, devices or links to
them; reading one would block forever (a pipe) or until memory runs out (``/dev/zero``).
Each input is checked with ``stat`` before it is opened, opened non-blocking, checked
again on the open descriptor, and read up to a size limit. What was read is stamped
with the file's size and modification time, so a resumed run can tell whether it changed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from psicbatch.data.images import EMPTY, ImageReadError, read_refusal
from psicbatch.paths import not_regular

MIB = 2**20
DEFAULT_MAX_MIB = 256  # far above any camera image
DEFAULT_DECODE_SECONDS = 60.0  # a camera image decodes in milliseconds


@dataclass(frozen=True)
class FileLimits:
    """Per-file limits of a run: bytes read, and seconds one file may take to read and
    decode."""

    max_bytes: int = DEFAULT_MAX_MIB * MIB
    decode_seconds: float = DEFAULT_DECODE_SECONDS


@dataclass(frozen=True)
class FileStamp:
    """What identifies the version of a file that was read."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, status: os.stat_result) -> FileStamp:
        return cls(status.st_size, status.st_mtime_ns)


def current_stamp(path: Path) -> FileStamp | None:
    """The file's stamp now (links followed); None when it is gone or not a regular file."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return FileStamp.of(status) if stat.S_ISREG(status.st_mode) else None


def read_file(path: Path, max_bytes: int) -> tuple[bytes, FileStamp]:
    """The whole file, or an ImageReadError naming why it is not read."""
    try:
        _check_regular(path, os.stat(path), max_bytes)
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise read_refusal(path, error) from None
    try:
        status = os.fstat(descriptor)
        _check_regular(path, status, max_bytes)  # the file opened may not be the one checked
        data = _read_at_most(descriptor, max_bytes + 1)
    except OSError as error:
        raise read_refusal(path, error) from None
    finally:
        os.close(descriptor)
    if len(data) > max_bytes:
        raise ImageReadError(path, _too_large(len(data), max_bytes, "grew while read: "))
    if not data:
        raise ImageReadError(path, EMPTY)
    return data, FileStamp.of(status)


def check_regular(path: Path) -> None:
    """An ImageReadError unless ``path`` is a regular file (links followed) that exists."""
    try:
        status = os.stat(path)
    except OSError as error:
        raise read_refusal(path, error) from None
    _check_regular(path, status, status.st_size)


def _check_regular(path: Path, status: os.stat_result, max_bytes: int) -> None:
    problem = not_regular(status.st_mode)
    if problem:
        raise ImageReadError(path, problem)
    if status.st_size > max_bytes:
        raise ImageReadError(path, _too_large(status.st_size, max_bytes))


def _too_large(size: int, max_bytes: int, prefix: str = "") -> str:
    return (
        f"{prefix}file is {size / MIB:.1f} MiB, above the {max_bytes / MIB:.3g} MiB limit "
        "(--max-file-size)"
    )


def _read_at_most(descriptor: int, limit: int) -> bytes:
    chunks, total = [], 0
    while total < limit:
        chunk = os.read(descriptor, min(limit - total, 8 * MIB))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
