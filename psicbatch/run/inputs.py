"""Turning the command line's sources (folders, globs, files, list files) into one list."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from psicbatch.data.images import IMAGE_SUFFIXES
from psicbatch.errors import PsicbatchError


def collect_inputs(sources: list[str], list_file: Path | None = None) -> list[Path]:
    """Images in a stable order, each once.

    Folders are searched recursively for image extensions without following symbolic links
    to folders (so link loops cannot trap the search); files named explicitly are taken
    whatever their extension; anything else is a glob pattern. A list file holds one path
    per line (blank lines and ``#`` comments skipped), relative to the list file's folder.
    """
    found: list[Path] = []
    for source in sources:
        found += _expand(source)
    if list_file is not None:
        found += _read_list(list_file)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise PsicbatchError("no input images: give folders, files, globs or --list")
    return unique


def _expand(source: str) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        return _walk(path)
    if path.is_file() or path.is_symlink():
        return [path]
    matches = sorted(glob.glob(source, recursive=True))
    if not matches:
        raise PsicbatchError(f"{source}: no such file or folder, and no file matches it")
    return [p for m in matches for p in (_walk(Path(m)) if Path(m).is_dir() else [Path(m)])]


def _walk(folder: Path) -> list[Path]:
    images = []
    for root, folders, files in os.walk(folder, followlinks=False):
        folders.sort()
        images += [
            Path(root) / f for f in sorted(files) if Path(f).suffix.lower() in IMAGE_SUFFIXES
        ]
    return images


def _read_list(list_file: Path) -> list[Path]:
    try:
        lines = list_file.read_text().splitlines()
    except OSError as error:
        raise PsicbatchError(f"{list_file}: cannot read the list ({error.strerror})") from None
    entries = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return [p if p.is_absolute() else list_file.parent / p for p in map(Path, entries)]
