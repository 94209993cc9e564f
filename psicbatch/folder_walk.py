"""The files below a folder, for every command that searches one (a run's input folders,
a dataset's image folders, calibration and parity images).

Links to folders are followed: camera folders linked into one input folder (``ln -s
/mnt/line3 images/line3``) are read as if they were there, under the link's name, where
they would otherwise be passed over without a word. Each folder is searched once, known by
its device and inode: a link back up the tree (a loop) or to a folder searched already is
not followed again, so every file is listed once. Where a folder is reached by two paths,
it is listed under the one a watch watches it under (``run.folder_scan``): the folders
themselves first, then links in name order, so a run's and a watch's results of one
folder name its files alike. A folder that cannot be read (no
permission) is passed over, as ``os.walk`` does: a dataset on its own file system holds
``lost+found``, which only root reads. A run names such folders (``unreadable``), since it
would otherwise leave their images out without a word. A folder that does not answer
within the read limit (``read_limit``: a network share that stopped answering) ends the
search in one line naming it, where it waited for ever.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path

from psicbatch.paths import looked_at

Identity = tuple[int, int]  # a folder's device and inode


class SearchOrder:
    """The order folders are searched in, by a run's walk and by a watch's scan alike, so
    both name a folder reached by two paths the same way: the folders below the start
    first, depth first; then the folders links lead to, in the links' name order, each
    link's subfolders before the next link. Iterating gives (folder, whether it was
    reached through a link); ``add`` gives what the folder just handed out holds."""

    def __init__(self, start: str) -> None:
        self.folders: list[tuple[str, bool]] = [(start, False)]  # a stack
        self.links: list[str] = []  # a heap, in name order
        self.through_link = False  # of the folder handed out last

    def __iter__(self) -> Iterator[tuple[str, bool]]:
        while self.folders or self.links:
            if self.folders:
                folder, self.through_link = self.folders.pop()
            else:
                folder, self.through_link = heapq.heappop(self.links), True
            yield folder, self.through_link

    def add(self, subfolders: Iterable[str], links: Iterable[str]) -> None:
        """The last folder's subfolders (searched next, the last given first: a stack)
        and its links to folders."""
        self.folders.extend((folder, self.through_link) for folder in subfolders)
        for link in links:
            heapq.heappush(self.links, link)


def files_below(folder: Path, unreadable: list[OSError] | None = None) -> Iterator[Path]:
    """Every file below ``folder`` (links to files included, as they are): a folder's
    files in name order, then its subfolders' in name order, then those of the links to
    folders met, in name order (``SearchOrder``); the errors of folders that could not be
    read are added to ``unreadable``."""
    searched: set[Identity] = set()
    order = SearchOrder(str(folder))
    for current, _ in order:
        try:
            found = looked_at(current, partial(_contents, current, searched))
        except OSError as error:
            if unreadable is not None:
                unreadable.append(error)
            continue
        if found is None:
            continue  # reached again through a link: searched already
        files, subfolders, links = found
        yield from map(Path, files)
        order.add(reversed(subfolders), links)  # the first in name order searched first


def entries_of(folder: Path, folders_only: bool = False) -> list[Path]:
    """``folder``'s entries (with ``folders_only``, those that lead to folders), looked at
    within the read limit, as every search of a folder is."""
    return looked_at(str(folder), partial(_entries, folder, folders_only))


def _entries(folder: Path, folders_only: bool) -> list[Path]:
    with os.scandir(folder) as listing:
        return [folder / e.name for e in listing if not folders_only or _is_folder(e)]


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a loop of links
        return False


def _contents(
    folder: str, searched: set[Identity]
) -> tuple[list[str], list[str], list[str]] | None:
    """``folder``'s files, subfolders and links to folders, each in name order; None where
    it was searched already. Looked at in one call, which the walk gives the read limit:
    on a share that stopped answering, a look waits for ever."""
    if not _first_visit(folder, searched):
        return None
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    files, subfolders, links = [], [], []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            subfolders.append(entry.path)
        elif is_link_to_folder(entry):
            links.append(entry.path)
        else:
            files.append(entry.path)
    return files, subfolders, links


def is_link_to_folder(entry: os.DirEntry[str]) -> bool:
    """Whether ``entry`` is a link to a folder. A link that cannot be followed (a loop of
    links, a target the system refuses to look at) is a file, as a dangling link is: its
    read fails alone, where the error ended the whole search."""
    return entry.is_symlink() and _is_folder(entry)


def _first_visit(folder: str, searched: set[Identity]) -> bool:
    """Whether ``folder`` (as its link leads) is searched for the first time, noting it."""
    identity = folder_identity(folder)
    if identity is None or identity in searched:
        return False  # gone since it was listed, or searched already
    searched.add(identity)
    return True


def folder_identity(path: str) -> Identity | None:
    """The device and inode of the folder ``path`` leads to; None where there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino
