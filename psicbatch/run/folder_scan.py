"""Finding the files a watch has not inspected, at a cost that does not grow with the
files it has.

A line's folder keeps every image it was given, often for days: a watch that stats each
of them on every poll spends more and more of a core doing nothing (with 20,000
inspected files, 76% of one core on a 2-core Xeon; ``benchmarks/watch_soak.py``). Here a
poll stats each folder; one whose modification time has not changed (no file added,
removed or renamed in it) keeps its last listing. A file is stat'ed when its name is
new, not yet inspected, or now names another inode (a file replaced by a rename). Files
rewritten in place change neither: full passes list and stat everything again, at most
every ``FULL_PASS_SECONDS`` and never more than a small share of the time.

Links to folders are followed, as a run's input folders are, each folder once (known by
its device and inode) and always under the same path: the folders themselves first, then
links in name order, and a folder once watched through a link keeps that link's path
while it leads there (a file reached by a second path would otherwise be inspected
again, as another file). A folder that cannot be read is passed over and tried again at
every poll, so a wrong permission holds back its images, not the watch. A folder that
stops answering (``SILENT_SECONDS``) is the share's delay, not the scan's work: it does
not lengthen the wait before the next poll, which would otherwise grow to ten times the
silence once the share answers again.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psicbatch.data.images import IMAGE_SUFFIXES
from psicbatch.folder_walk import Identity, SearchOrder, folder_identity, is_link_to_folder
from psicbatch.paths import path_bytes

FileVersion = tuple[bytes, int, int]  # path bytes, size, mtime in ns
FULL_PASS_SECONDS = 2.0  # at least this long between full passes
FULL_PASS_SHARE = 0.05  # and full passes take at most this share of the time
POLL_SHARE = 0.1  # a poll takes at most this share of the time between polls
# A folder changed this recently may change again within the same tick of its clock
# (FAT's is 2 s): it is listed again at every poll until it has been quiet this long.
# (A file server whose clock runs behind can still hide a file that long: until the next
# full pass.)
QUIET_NS = 2_000_000_000
# A scan that has had no answer from the file system for this long is waiting on it (a
# network share that stopped answering: a hard NFS mount waits for ever, not failing).
SILENT_SECONDS = 10.0


def version(path: Path | str, stat: os.stat_result) -> FileVersion:
    """What identifies a version of a file: its path, size and modification time."""
    return path_bytes(path), stat.st_size, stat.st_mtime_ns


class Ledger:
    """The file versions a watch has inspected, held as 16-byte digests (BLAKE2b) in
    sorted arrays.

    A watch's ledger grows with every version it inspects, for the life of the process
    (a line's week at one image a second is 600,000): a set of (path, size, time) takes
    about 180 bytes a version, this 16. New digests wait in a small set and are sorted
    into the arrays a few thousand at a time. Two versions share a digest with a
    probability near 2^-128 per pair."""

    RECENT_LIMIT = 4096  # digests held in the set before they are sorted in

    def __init__(self, versions: Iterable[FileVersion] = ()) -> None:
        self._high = np.empty(0, np.uint64)  # the digests' two halves, sorted by both
        self._low = np.empty(0, np.uint64)
        self._recent: set[bytes] = set()
        self.update(versions)

    @staticmethod
    def _digest(file_version: FileVersion) -> bytes:
        path, size, mtime_ns = file_version
        numbers = struct.pack("<qq", size, mtime_ns)  # fixed width: no two versions alike
        return hashlib.blake2b(path + numbers, digest_size=16).digest()

    def add(self, file_version: FileVersion) -> None:
        self.update([file_version])

    def update(self, versions: Iterable[FileVersion]) -> None:
        """Sorted in once a few thousand have come: a restarted watch adds each part's
        versions in turn, and sorting every time would make that quadratic."""
        self._recent.update(map(self._digest, versions))
        if len(self._recent) >= self.RECENT_LIMIT:
            self._sort_in()

    def __contains__(self, file_version: object) -> bool:
        return self._holds(self._digest(file_version))  # type: ignore[arg-type]

    def __len__(self) -> int:
        self._sort_in()  # the recent digests may repeat sorted ones
        return len(self._high)

    def holds_each(self, versions: list[FileVersion]) -> list[bool]:
        """``version in ledger`` for each of many at once, the sorted arrays searched for
        all of them together (a restarted watch asks of each of a week's parts)."""
        digests = [self._digest(file_version) for file_version in versions]
        if not digests:
            return []
        halves = np.frombuffer(b"".join(digests), dtype="<u8").reshape(-1, 2)
        first = np.searchsorted(self._high, halves[:, 0], side="left")
        matches = np.searchsorted(self._high, halves[:, 0], side="right") - first
        found = np.zeros(len(digests), dtype=bool)
        single = np.flatnonzero(matches == 1)  # a high half met once: its low half decides
        found[single] = self._low[first[single]] == halves[single, 1]
        return [
            bool(known) or digest in self._recent or (count > 1 and self._holds(digest))
            for known, digest, count in zip(found, digests, matches.tolist(), strict=True)
        ]

    def _holds(self, digest: bytes) -> bool:
        if digest in self._recent:
            return True
        high, low = (np.uint64(half) for half in struct.unpack("<QQ", digest))
        first = np.searchsorted(self._high, high, side="left")
        last = np.searchsorted(self._high, high, side="right")
        return bool((self._low[first:last] == low).any())

    def _sort_in(self) -> None:
        """The recent digests into the sorted arrays, each digest once. A stable sort by
        the high halves merges the sorted arrays with the few recent digests in linear
        time (a restart sorts in a week's versions a few thousand at a time: sorting all
        of them by both halves each time took 5.6 of the 6.9 s over 600,000); only where
        high halves repeat (a digest added again) are both halves sorted."""
        if not self._recent:
            return
        halves = np.frombuffer(b"".join(self._recent), dtype="<u8").reshape(-1, 2)
        high = np.concatenate([self._high, halves[:, 0]])
        low = np.concatenate([self._low, halves[:, 1]])
        order = np.argsort(high, kind="stable")
        high, low = high[order], low[order]
        if (high[1:] == high[:-1]).any():
            order = np.lexsort((low, high))
            high, low = high[order], low[order]
        first = np.ones(len(high), dtype=bool)
        first[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
        self._high, self._low = high[first], low[first]
        self._recent.clear()


@dataclass
class Listing:
    """A folder as last listed: its path and modification time, its subfolders, and its
    image files (name, inode) that were not known to be inspected then or since."""

    folder: str
    mtime_ns: int
    listed_ns: int  # wall clock
    folders: list[str]
    candidates: list[tuple[str, int]]
    links: list[str]  # links to folders

    def still_valid(self, mtime_ns: int) -> bool:
        return mtime_ns == self.mtime_ns and self.listed_ns - mtime_ns > QUIET_NS


def list_folder(folder: str, mtime_ns: int, skip: str, inspected: dict[str, int]) -> Listing:
    """``folder``'s subfolders (``skip``, the output, left out), its links to folders and
    image files not ``inspected`` (name -> inode) in that inode, as ``readdir`` gives them. A
    folder that keeps receiving files is listed at every poll: per entry, only what
    ``readdir`` gave (type, name, inode) is read, and no path is made."""
    listed_ns = time.time_ns()
    folders, images, links = [], [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.path != skip:
                    folders.append(entry.path)
            elif is_link_to_folder(entry):
                links.append(entry.path)
            elif entry.name.lstrip(".").lower().endswith(IMAGE_SUFFIXES):  # as splitext
                inode = entry.inode()
                if inspected.get(entry.name) != inode:
                    images.append((entry.name, inode))
    return Listing(folder, mtime_ns, listed_ns, folders, images, links)


def file_status(path: str) -> os.stat_result | None:
    """``path``'s status; a link's own where the link cannot be followed (a loop of
    links), so that its read fails alone, on its row, where the error stopped the watch.
    None where the file is gone."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError:
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None


class FolderScan:
    """The image files under ``folder`` (recursive) whose current version is not in
    ``done`` (the watch's ledger, which it extends as it writes results)."""

    def __init__(
        self,
        folder: Path,
        skip: Path,
        done: Container[FileVersion],
        notes: dict[str, str] | None = None,
    ) -> None:
        self.folder, self.skip, self.done = str(folder), str(skip), done
        # folder -> name -> inode, of the files whose current version is done
        self.inspected: dict[str, dict[str, int]] = {}
        self.listings: dict[str, Listing] = {}
        self.next_full_pass = 0.0
        self.wait_seconds = 0.0  # how long to wait before the next poll, at least
        # a folder (device, inode) -> the link it is watched through, for as long as it leads there
        self.linked: dict[Identity, str] = {}
        self.output = folder_identity(self.skip)  # the output folder, which links may lead to too
        # path -> what the watch should say of it (the caller's dict, where it gives one)
        self.notes = {} if notes is None else notes
        self.answered = time.monotonic()  # when the file system last answered the scan
        self.missing = False  # the watched folder itself, at the last scan (unmounted, moved)
        self.silence = 0.0  # seconds of the scan under way spent without an answer

    def silent_for(self) -> float | None:
        """How long the scan under way (in another thread) has had no answer from the
        file system, where that is ``SILENT_SECONDS`` or more."""
        waited = time.monotonic() - self.answered
        return waited if waited >= SILENT_SECONDS else None

    def _answer(self) -> None:
        """A system call of the scan returned."""
        now = time.monotonic()
        if now - self.answered >= SILENT_SECONDS:
            self.silence += now - self.answered
        self.answered = now

    def pending(self, now: float) -> dict[Path, os.stat_result]:
        """Path -> stat of every image file not yet inspected in its current version."""
        full_pass = now >= self.next_full_pass
        started = self.answered = time.monotonic()
        self.silence = 0.0
        if full_pass:  # everything listed and stat'ed again; removed files forgotten
            self.inspected, self.listings = {}, {}
        found = {}
        for listing in self._folders():
            inspected = self.inspected.setdefault(listing.folder, {})
            candidates = []
            for name, inode in listing.candidates:
                if inspected.get(name) == inode:
                    continue  # inspected since the folder was listed
                path = os.path.join(listing.folder, name)
                try:
                    stat = file_status(path)
                finally:
                    self._answer()
                if stat is None:  # removed since it was listed
                    continue
                if version(path, stat) in self.done:
                    inspected[name] = inode
                else:
                    inspected.pop(name, None)
                    found[Path(path)] = stat
                    candidates.append((name, inode))
            listing.candidates = candidates
        self._answer()
        took = time.monotonic() - started - self.silence
        if full_pass:
            self.next_full_pass = now + max(FULL_PASS_SECONDS, took / FULL_PASS_SHARE)
        else:
            self.wait_seconds = took / POLL_SHARE
        return found

    def _folders(self) -> Iterator[Listing]:
        """Every folder's listing, listed again where the folder changed: the folders
        below the watched one, then those links lead to (each link's folders before the
        next link), in name order, each folder once."""
        listings: dict[str, Listing] = {}
        seen: dict[Identity, str] = {}  # folder -> the path it was listed under
        order = SearchOrder(self.folder)
        for folder, through_link in order:
            try:
                status = os.stat(folder)
                if folder == self.folder:
                    self.missing = False
                identity = (status.st_dev, status.st_ino)
                if identity == self.output or not self._first_path(
                    folder, identity, seen, through_link
                ):
                    continue
                listing = self.listings.get(folder)
                if listing is None or not listing.still_valid(status.st_mtime_ns):
                    listing = list_folder(
                        folder, status.st_mtime_ns, self.skip, self.inspected.get(folder, {})
                    )
            except (FileNotFoundError, NotADirectoryError):  # removed while scanning
                if folder == self.folder:
                    self.missing = True
                continue
            except OSError as error:  # no permission: tried again at the next poll
                self.notes.setdefault(
                    folder,
                    f"cannot be read ({error.strerror or error}): its images wait until it can",
                )
                continue
            finally:
                self._answer()
            listings[folder] = listing
            order.add(listing.folders, listing.links)
            yield listing
        self.listings = listings

    def _first_path(
        self, folder: str, identity: Identity, seen: dict[Identity, str], through_link: bool
    ) -> bool:
        """Whether ``folder`` is the path its folder is watched under: the first this
        scan met, and for one reached through a link, the path it was first watched under
        for as long as that path leads there (its files keep their paths). Notes another."""
        first = seen.get(identity)
        if first is None and through_link:
            earlier = self.linked.setdefault(identity, folder)
            first = earlier if earlier != folder and folder_identity(earlier) == identity else None
        if first is not None:
            self.notes.setdefault(
                folder, f"is the folder watched as {first}: its images are inspected once, there"
            )
            return False
        seen[identity] = folder
        if through_link:
            self.linked[identity] = folder
        return True
