"""File names as the OS gives them, and which files may be opened at all.

POSIX file names are bytes and need not be valid UTF-8 (names from Windows shares and old
cameras often are not). Python carries such names in ``str`` with ``surrogateescape``;
they cannot be written to Parquet strings as they are. Each row therefore stores the name
twice: readable (invalid bytes shown as U+FFFD) and as the exact bytes, so a row always
says which file it is.

Only regular files are opened: a named pipe would make a read wait for ever, and a
device such as /dev/zero would never end one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from psicbatch import read_limit
from psicbatch.errors import PsicbatchError
from psicbatch.run.limited import TimeLimitExceeded, call_limited


class _Updatable(Protocol):
    def update(self, data: bytes, /) -> None: ...


Hash = TypeVar("Hash", bound=_Updatable)  # any hashlib object
T = TypeVar("T")


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


def named_path(path: Path) -> Path:
    """``path`` with a last name: ``.``, ``..`` and ``x/..`` as the folder they name (an
    output places files beside itself, ``OUT.lock``, ``OUT.parts``, which needs its name);
    other paths as given, so messages keep the user's spelling."""
    return path.resolve() if path.name in ("", "..") else path


def path_from_bytes(raw: bytes) -> Path:
    """The path a stored ``path_bytes`` value names."""
    return Path(os.fsdecode(raw))


def row_file(row: Mapping[str, Any]) -> Path:
    """The file a stored results or predictions row is of, exactly: its ``path_bytes``
    (``path`` shows names that are not UTF-8 with U+FFFD; older rows have only ``path``)."""
    raw = row.get("path_bytes")
    return path_from_bytes(raw) if raw is not None else Path(row["path"])


# What a path that is not a regular file is, for messages.
SPECIAL_FILES = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "not a regular file (named pipe)"),
    (stat.S_ISSOCK, "not a regular file (socket)"),
    (stat.S_ISCHR, "not a regular file (character device)"),
    (stat.S_ISBLK, "not a regular file (block device)"),
)


def not_regular(mode: int) -> str | None:
    """Why a file of ``mode`` (``os.stat``'s, links followed) must not be opened, or None."""
    for test, problem in SPECIAL_FILES:
        if test(mode):
            return problem
    return None if stat.S_ISREG(mode) else "not a regular file"


def regular_file_bytes(path: Path) -> bytes:
    """A small input file's bytes (a list of paths, a decision file, a report), refused in
    one line when it is not a regular file: reading a named pipe would wait for ever.
    Read within the read limit (``read_limit``): a share that stopped answering would wait
    for ever too. Other failures, and that one, raise OSError, for the caller to word."""
    seconds = read_limit.read_seconds()
    try:
        return call_limited(partial(_regular_file_bytes, path), seconds)
    except TimeLimitExceeded:
        raise TimeoutError(errno.ETIMEDOUT, read_limit.stalled(seconds)) from None


def answering(path: Path | str) -> None:
    """Nothing, once a look at ``path`` (its status) came back, whatever it said; a
    one-line error where it did not within the read limit. For the first look at a path
    a command is given: on a share that stopped answering it waited for ever, before the
    command had said a word."""
    looked_at(path, partial(_look, path))


def looked_at(path: Path | str, look: Callable[[], T]) -> T:
    """``look()``, a look at ``path`` (its status, its listing), within the read limit
    (``read_limit``); past it, one line naming the path."""
    return _within_read_limit(path, look, read_limit.unanswered)


def read_in_time(path: Path | str, read: Callable[[], T]) -> T:
    """``read()``, a reading of the file at ``path`` (a model, an engine's manifest, a
    digest), within the read limit; past it, one line naming the file."""
    return _within_read_limit(path, read, read_limit.stalled)


def _within_read_limit(
    path: Path | str, call: Callable[[], T], problem: Callable[[float], str]
) -> T:
    seconds = read_limit.read_seconds()
    try:
        return call_limited(call, seconds)
    except TimeLimitExceeded:
        raise PsicbatchError(f"{readable_path(path)}: {problem(seconds)}") from None


def _look(path: Path | str) -> None:
    with contextlib.suppress(OSError):  # what is wrong is the caller's to say
        os.stat(path)


def _regular_file_bytes(path: Path) -> bytes:
    problem = not_regular(os.stat(path).st_mode)
    if problem:
        raise PsicbatchError(f"{readable_path(path)}: {problem}")
    return path.read_bytes()


@dataclass(frozen=True)
class FileSnapshot:
    """A small input file's bytes, read once, and their sha256: what is checked against a
    record is what is then used, even if the file changes on disk meanwhile (and every
    worker process gets the same bytes)."""

    path: Path
    data: bytes
    sha256: str

    @classmethod
    def read(cls, path: Path) -> FileSnapshot:
        """Refused as ``regular_file_bytes`` refuses; other failures raise OSError."""
        data = regular_file_bytes(path)
        return cls(path, data, hashlib.sha256(data).hexdigest())


def file_head(path: Path, size: int = 4096) -> bytes:
    """The first ``size`` bytes of a regular file (empty for anything else, or a file that
    cannot be read): how an output psicbatch wrote is known again by its first line or a
    marker near its top."""
    if not os.path.isfile(path):
        return b""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


SETTLED_NS = 2_000_000_000  # how old a file's last change is before its digest is kept


def file_sha256(path: str | os.PathLike) -> str:
    """Content hash used to tie engines and results to the exact checkpoint they came from.

    Remembered for the file as it is (device, inode, size, modified and changed times): a
    run describes its checkpoint more than once (0.09 s each for the paper's network's
    128 MB on a 2-core AVX2 EPYC), while a file written since has other times. A file
    changed in the last SETTLED_NS is hashed every time: the times a file system gives
    can be milliseconds coarse, so two writes that close together may share them. Read
    within the read limit: a share that stopped answering would hold the reading for ever."""
    name = os.fsdecode(path)
    return read_in_time(name, partial(_file_sha256, name))


def _file_sha256(path: str) -> str:
    state = os.stat(path)
    if time.time_ns() - state.st_ctime_ns < SETTLED_NS:
        return _sha256(path)
    identity = (state.st_dev, state.st_ino, state.st_size, state.st_mtime_ns, state.st_ctime_ns)
    return _sha256_of(identity, path)


@functools.lru_cache(maxsize=16)
def _sha256_of(identity: tuple[int, ...], path: str) -> str:
    """The digest of the file at ``path`` while it keeps ``identity``."""
    return _sha256(path)


def _sha256(path: str) -> str:
    return hashed_file(path, hashlib.sha256()).hexdigest()


def hashed_file(path: str | os.PathLike, digest: Hash) -> Hash:
    """``digest`` updated with the file's bytes, read a MiB at a time."""
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest
