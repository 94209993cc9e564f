"""One psicbatch process at a time per output.

Two processes writing one output interleave their files: two watches on one folder inspected
every image twice, two trainings of one ``--out`` would save their epochs over each other's
and resume from either, two builds of one engine folder would remove each other's staging
folder. The second process refuses in one line instead. The lock is an OS file lock on a
lock file (``OUT.lock`` beside a results file, a checkpoint, a decision file, a report
folder (``cv``, ``eval``, ``bench``) or an engine folder; ``_watch.lock`` inside a watch's
folder, whose parent a line may not let it write), held for the process's life and freed by
the OS even when the process is killed; the file is removed when the process ends normally.
It names the process and the command that holds it, so a refusal says which one to wait
for: commands share a lock where they write one output (``build-engine`` and ``calibrate
--engine`` an engine folder). Where the file system offers no locks, the output goes
unguarded. Releasing waits at most ``RELEASE_SECONDS`` for the file system: on a share that
stopped answering a process asked to stop would otherwise wait there for ever, and a lock
file left behind locks nothing (the lock is the open file's, freed as the process ends).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import IO

from psicbatch.errors import PsicbatchError
from psicbatch.paths import named_path, readable_path
from psicbatch.run.limited import TimeLimitExceeded, call_limited

# What flock says on a file system that offers no locks (NFS without its lock service).
NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}
RELEASE_SECONDS = 5.0


class OutputLock:
    """Exclusive, non-blocking lock on ``path`` (default ``OUT.lock``) while ``command``
    writes ``out``."""

    def __init__(self, out: Path, command: str, path: Path | None = None) -> None:
        self.out = out
        self.command = command
        named = named_path(out)
        if not named.name:
            raise PsicbatchError(
                f"{out}: the root folder cannot be an output; choose another --out"
            )
        self.path = path or named.with_name(named.name + ".lock")
        self.handle: IO[str] | None = None

    def __enter__(self) -> OutputLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a+")  # held open for the lock's lifetime
        except OSError as error:
            raise PsicbatchError(
                f"{self.path.parent}: cannot write the output there ({error.strerror or error})"
            ) from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            self.handle.close()
            raise PsicbatchError(
                f"{readable_path(self.out)}: another psicbatch {holder} is writing this "
                f"output (lock {readable_path(self.path)}); wait for it or choose another --out"
            ) from None
        except OSError as error:
            if error.errno not in NO_LOCKS:
                raise
            # A network mount without its lock service: the output goes unguarded, as
            # it did before there were locks, rather than refused.
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{os.getpid()} {self.command}\n")
        self.handle.flush()
        return self

    def _holder(self) -> str:
        """The command and process holding the lock, as its file names them (the asking
        command where the holder has not written them yet)."""
        assert self.handle is not None
        self.handle.seek(0)
        pid, _, command = self.handle.read().strip().partition(" ")
        return f"{command} (process {pid})" if pid.isdigit() and command else self.command

    def __exit__(self, *exc: object) -> None:
        handle = self.handle
        assert handle is not None

        def release() -> None:
            self.path.unlink(missing_ok=True)
            handle.close()  # which frees the lock

        with contextlib.suppress(TimeLimitExceeded):
            call_limited(release, RELEASE_SECONDS)
