"""Finding the files a watch has not inspected, at a cost that does not grow with the
files it has.

A line's folder keeps every image it was given, often for days: a watch that stats each
of them on every poll spends more and more of a core doing nothing (20,000 inspected
files took 224 ms a scan on a 2-core Xeon, every 0.1 s). Here each poll only lists names
and inode numbers (one ``readdir``, no ``stat``); a file is stat'ed when its name is new,
not yet inspected, or now names another inode (a file replaced by a rename). Files
rewritten in place keep their inode: full passes stat every file again, at most every
``FULL_PASS_SECONDS`` and never more than a small share of the time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from psicbatch.data.images import IMAGE_SUFFIXES
from psicbatch.paths import path_bytes

FileVersion = tuple[bytes, int, int]  # path bytes, size, mtime in ns
FULL_PASS_SECONDS = 2.0  # at least this long between full passes
FULL_PASS_SHARE = 0.05  # and full passes take at most this share of the time
POLL_SHARE = 0.1  # listing names takes at most this share of the time between polls


def version(path: Path | str, stat: os.stat_result) -> FileVersion:
    """What identifies a version of a file: its path, size and modification time."""
    return path_bytes(Path(path)), stat.st_size, stat.st_mtime_ns


def image_entries(folder: str, skip: str) -> Iterator[os.DirEntry[str]]:
    """Image files under ``folder`` (recursive; ``skip``, the output, left out), as
    ``readdir`` gives them: names and inodes, without a ``stat``. Linked folders are not
    followed, as ``os.walk`` does not."""
    folders = [folder]
    while folders:
        try:
            entries = list(os.scandir(folders.pop()))
        except (FileNotFoundError, NotADirectoryError):  # removed while scanning
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.path != skip:
                    folders.append(entry.path)
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                yield entry


class FolderScan:
    """The image files under ``folder`` whose current version is not in ``done`` (the
    watch's ledger, which it extends as it writes results)."""

    def __init__(self, folder: Path, skip: Path, done: set[FileVersion]) -> None:
        self.folder, self.skip, self.done = str(folder), str(skip), done
        self.inspected: dict[str, int] = {}  # path -> inode, of files whose version is done
        self.next_full_pass = 0.0
        self.wait_seconds = 0.0  # how long to wait before the next poll, at least

    def pending(self, now: float) -> dict[Path, os.stat_result]:
        """Path -> stat of every image file not yet inspected in its current version."""
        full_pass = now >= self.next_full_pass
        started = time.monotonic()
        found = {}
        inspected = {} if full_pass else self.inspected  # a full pass forgets removed files
        for entry in image_entries(self.folder, self.skip):
            inode = entry.inode()
            if not full_pass and inspected.get(entry.path) == inode:
                continue
            try:
                stat = os.stat(entry.path)
            except FileNotFoundError:  # removed while scanning
                continue
            if version(entry.path, stat) in self.done:
                inspected[entry.path] = inode
            else:
                inspected.pop(entry.path, None)
                found[Path(entry.path)] = stat
        self.inspected = inspected
        took = time.monotonic() - started
        if full_pass:
            self.next_full_pass = now + max(FULL_PASS_SECONDS, took / FULL_PASS_SHARE)
        else:
            self.wait_seconds = took / POLL_SHARE
        return found
