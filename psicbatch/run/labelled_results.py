"""A run's results matched with a labelled dataset's images: scored by ``eval RESULTS
--labels`` and chosen on by ``calibrate RESULTS --labels``, so both count the same images.

A labelled image is the file a row names, or a copy of it: a file of the same name and
the same bytes (reviewed images are often copied out of the line's folder) or, where the
inspected file is gone (a line moves its images away once inspected), of the same name
and the size the run recorded of it (results of schema 4 on, and every watch's). Of
several such files, the one whose path ends most like the labelled image's
(``kos26/Part0.jpg``: a dataset may hold identical images under the same names in
different folders). Where a watch inspected a replaced file again, the last result
counts.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from psicbatch.data.combined import WHOLE, read_datasets
from psicbatch.data.layouts import SampleRef
from psicbatch.data.splits import grouped_by
from psicbatch.errors import PsicbatchError
from psicbatch.paths import path_bytes, path_from_bytes, readable_path

Pair = tuple[SampleRef, dict[str, Any]]


@dataclass
class Found:
    """The labelled samples' result rows, and how many rows were of labelled images."""

    pairs: list[Pair]  # in the dataset's order
    rows_of_labelled: int  # earlier inspections of the same images included
    copies: int  # labelled images that are copies of the files the run inspected
    by_size: int  # of those, copies of files gone since, known by name and recorded size
    labelled: int  # images in the dataset
    rows: int  # rows in the results

    @property
    def usable(self) -> list[Pair]:
        """The pairs whose result has no error."""
        return [(sample, row) for sample, row in self.pairs if row.get("error") is None]

    def counts(self, done: str) -> str:
        """What was ``done`` (scored, used) and what was left out, as a sentence's clauses."""
        with_result, usable = len(self.pairs), len(self.usable)
        counts = [f"{with_result} of the {self.labelled} labelled images have a result"]
        if self.copies:
            counts.append(f"{self.copies} of them as copies of the files the run inspected")
        if self.by_size:
            counts.append(
                f"{self.by_size} of those known by name and size, the inspected files being "
                "gone (moved away since)"
            )
        if with_result > usable:
            counts.append(f"{with_result - usable} of them an error (not {done})")
        if self.rows_of_labelled > with_result:
            again = self.rows_of_labelled - with_result
            counts.append(
                f"{again} earlier results of the same images (inspected again; the last {done})"
            )
        if self.rows > self.rows_of_labelled:
            counts.append(
                f"{self.rows - self.rows_of_labelled} results are of images not labelled "
                f"(not {done})"
            )
        return "; ".join(counts)


def labelled_results(
    results: Path,
    table: pa.Table,
    labels: Path,
    layout: str,
    columns: tuple[str, ...],
    split: str = WHOLE,
) -> Found:
    """The ``columns`` of the rows of ``table`` (read from ``results``) whose images are
    in the dataset ``labels`` (in its ``split`` part); refused in one line when none of
    them has a usable row."""
    samples, _ = read_datasets([labels], layout, split)
    found = result_rows(table, samples, columns)
    if not found.usable:
        example = f" (they name e.g. {table['path'][0]})" if table.num_rows else ""
        raise PsicbatchError(
            f"{readable_path(results)}: none of its results without an error is of an image "
            f"of {readable_path(labels)}{example}; give the dataset the run inspected, from "
            "the folder the run started in where it was given relative paths"
        )
    return found


def regrouped(pairs: list[Pair], pattern: str | None) -> list[Pair]:
    """The pairs with their samples in the groups ``pattern`` names (the images of one
    part, ``data.splits.grouped_by``); as they are without a pattern."""
    if pattern is None:
        return pairs
    samples = grouped_by([sample for sample, _ in pairs], pattern)
    return [(sample, row) for sample, (_, row) in zip(samples, pairs, strict=True)]


def result_rows(table: pa.Table, samples: list[SampleRef], columns: tuple[str, ...]) -> Found:
    """Each labelled sample with its result row, in the dataset's order; only those rows
    become Python."""
    by_file = {path_bytes(sample.image_path.resolve()): sample for sample in samples}
    # A file name no labelled image has rules a row out without resolving its path (a
    # system call per folder level: seconds over a week of a line's results); a path
    # seen before is not resolved again.
    labelled_names = {os.path.basename(key) for key in by_file} | {
        os.fsencode(sample.image_path.name) for sample in samples
    }
    named = ("path", "path_bytes", "file_size")  # the size of the file as it was read
    names = table.select([c for c in named if c in table.column_names])
    position: dict[bytes, int] = {}
    resolved: dict[bytes, bytes] = {}
    used: set[int] = set()  # rows of labelled images, earlier inspections included
    elsewhere: dict[bytes, dict[bytes, list[int]]] = {}  # name -> other files -> their rows
    sizes: dict[int, int | None] = {}  # those rows' recorded file sizes
    for index, row in enumerate(names.to_pylist()):
        raw = row.get("path_bytes") or path_bytes(row["path"])  # as ``paths.row_file``
        name = os.path.basename(raw)
        if name not in labelled_names:
            continue
        if raw not in resolved:
            resolved[raw] = path_bytes(path_from_bytes(raw).resolve())
        key = resolved[raw]
        if key in by_file:
            position[key] = index
            used.add(index)
        else:
            elsewhere.setdefault(name, {}).setdefault(key, []).append(index)
            sizes[index] = row.get("file_size")
    copies = by_size = 0
    for key, sample in by_file.items():
        if key in position:
            continue
        copy = _copy_rows(sample, key, elsewhere.get(os.path.basename(key), {}), sizes)
        if copy is not None:
            rows, gone = copy
            position[key] = rows[-1]
            used.update(rows)
            copies += 1
            by_size += gone
    wanted = [key for key in by_file if key in position]
    present = [c for c in columns if c in table.column_names]
    indices = pa.array([position[key] for key in wanted], type=pa.int64())
    rows = table.select(present).take(indices).to_pylist()
    pairs = [(by_file[key], row) for key, row in zip(wanted, rows, strict=True)]
    return Found(pairs, len(used), copies, by_size, len(samples), table.num_rows)


def _copy_rows(
    sample: SampleRef, key: bytes, files: dict[bytes, list[int]], sizes: dict[int, int | None]
) -> tuple[list[int], bool] | None:
    """The rows of the inspected file the labelled ``sample`` is a copy of, and whether
    it was known by its recorded size: a file of the same name holding the same bytes or,
    where that file is gone (a line moves its images away once inspected), one whose rows
    record the labelled file's size. Rows recording another size are of other versions of
    that file, never this image's (and rule a file out without a system call). Of several
    files, one holding the bytes, then the one whose path ends most like ``key``
    (``kos26/Part0.jpg``), then the latest."""
    try:
        size = os.stat(sample.image_path).st_size
    except OSError:
        return None
    found: dict[bytes, tuple[list[int], bool]] = {}
    for file, rows in files.items():
        versions = [index for index in rows if sizes.get(index) in (None, size)]
        if not versions:
            continue
        inspected = path_from_bytes(file)
        if same_file_content(inspected, sample.image_path):
            found[file] = (versions, False)
        elif None not in (sizes.get(index) for index in versions) and not os.path.lexists(
            inspected
        ):
            found[file] = (versions, True)
    if not found:
        return None
    nearest = max(
        found,
        key=lambda file: (not found[file][1], _common_tail(file, key), found[file][0][-1]),
    )
    return found[nearest]


def _common_tail(first: bytes, second: bytes) -> int:
    """How many trailing path components two paths share."""
    shared = 0
    pairs = zip(reversed(first.split(b"/")), reversed(second.split(b"/")), strict=False)
    for one, other in pairs:  # up to the shorter path's length
        if one != other:
            break
        shared += 1
    return shared


def same_file_content(inspected: Path, labelled: Path) -> bool:
    """Whether two regular files hold the same bytes (sizes first); a path that is not a
    regular file (gone, a pipe) is not opened."""
    try:
        first, second = os.stat(inspected), os.stat(labelled)
        regular = stat.S_ISREG(first.st_mode) and stat.S_ISREG(second.st_mode)
        if not regular or first.st_size != second.st_size:
            return False
        with open(inspected, "rb") as one, open(labelled, "rb") as other:
            while True:
                chunk = one.read(1 << 20)
                if chunk != other.read(1 << 20):
                    return False
                if not chunk:
                    return True
    except OSError:
        return False
