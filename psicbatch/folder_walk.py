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
would otherwise leave their images out without a word.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator
from pathlib import Path


def files_below(folder: Path, unreadable: list[OSError] | None = None) -> Iterator[Path]:
    """Every file below ``folder`` (links to files included, as they are): a folder's
    files in name order, then its subfolders' in name order, then those of the links to
    folders met, in name order; the errors of folders that could not be read are added to
    ``unreadable``."""
    searched: set[tuple[int, int]] = set()
    folders, links = [str(folder)], list[str]()  # links: a heap, in name order
    while folders or links:
        current = folders.pop() if folders else heapq.heappop(links)
        if not _first_visit(current, searched):
            continue  # reached again through a link: searched already
        try:
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            if unreadable is not None:
                unreadable.append(error)
            continue
        subfolders = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(entry.path)
            elif entry.is_symlink() and entry.is_dir():
                heapq.heappush(links, entry.path)
            else:
                yield Path(entry.path)
        folders.extend(reversed(subfolders))  # the first in name order searched first


def _first_visit(folder: str, searched: set[tuple[int, int]]) -> bool:
    """Whether ``folder`` (as its link leads) is searched for the first time, noting it."""
    try:
        status = os.stat(folder)
    except OSError:
        return False  # gone since it was listed
    identity = (status.st_dev, status.st_ino)
    if identity in searched:
        return False
    searched.add(identity)
    return True
