"""A results file's masks as image files, for viewers and line systems that do not read
COCO RLE.

Every non-empty mask (as the run wrote it: gated or not, inside its region of interest)
becomes a 1-bit PNG at its image's original size, under the input's path below the
inputs' common folder, named ``.png`` (``kos01/Part3.jpg`` gives ``kos01/Part3.png``;
two inputs that would share a name keep their own suffix: ``a.jpg.png``, ``a.bmp.png``).
``masks.csv`` lists them with each image's results, and ``masks.json`` records the
export: which results it came from, whether it finished, and every file it wrote. That
record is how an earlier export is known again: it is replaced only with ``--overwrite``,
its own files are replaced or removed, and no other file in the folder is ever touched.
The record is written before the first mask, so an interrupted export is known too.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import compress
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from PIL import Image

from psicbatch.atomic import write_atomically
from psicbatch.cpus import available_cpus
from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path, row_file
from psicbatch.progress import progress_bar
from psicbatch.run.output_guard import check_output_folder
from psicbatch.run.results import read_results_table
from psicbatch.run.rle import decode
from psicbatch.run.spreadsheet import spreadsheet_table
from psicbatch.run.stages import staged

MASK_INDEX = "masks.csv"
MASK_RECORD = "masks.json"
GENERATOR = "psicbatch report --mask-images"
PATH_COLUMNS = ("path", "path_bytes")  # schema 1 files have only the first
RUN_KEYS = ("checkpoint_sha256", "thresholds", "decisions", "masks", "roi", "finished_at")


def mask_names(files: list[Path]) -> list[str]:
    """Where each input's mask goes inside the export: its path below the common folder
    of all the run's inputs (so a name does not depend on which images have a mask),
    with the suffix ``.png``; names two inputs would share keep the input's suffix, and
    a name still taken gets ``-2``, ``-3``... (Worked on as strings: a day of a line's
    results names hundreds of thousands of files.)"""
    absolute = [os.path.abspath(file) for file in files]
    folders = {os.path.dirname(path) for path in absolute}  # few, however many files
    root = os.path.commonpath(list(folders)) if folders else ""
    start = len(os.path.join(root, ""))  # the root and its separator
    relative = [path[start:] for path in absolute]
    plain = [os.path.splitext(path)[0] + ".png" for path in relative]
    shared = Counter(plain)
    names: list[str] = []
    taken: set[str] = set()
    for path, name in zip(relative, plain, strict=True):
        candidate = path + ".png" if shared[name] > 1 else name
        number = 1
        while candidate in taken:
            number += 1
            candidate = f"{name[: -len('.png')]}-{number}.png"
        taken.add(candidate)
        names.append(candidate)
    return names


def write_mask_images(results: Path, folder: Path, overwrite: bool, quiet: bool = False) -> str:
    """Write the export (see the module's docstring); what it holds, in a few words."""
    table, run = read_results_table(results)
    masked = _masked(table)
    rows = table.filter(masked)
    paths = table.select([name for name in PATH_COLUMNS if name in table.column_names])
    every_name = mask_names([row_file(row) for row in paths.to_pylist()])
    names = list(compress(every_name, masked.to_pylist()))
    earlier = _earlier_files(folder, overwrite)
    _check_targets(folder, names, earlier)
    record = {
        "generator": GENERATOR,
        "results": readable_path(os.path.abspath(results)),
        "run": {key: run[key] for key in RUN_KEYS if run.get(key) is not None},
        "complete": False,
        "files": sorted({*earlier, *names}),  # all it may have written
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_record(folder, record)
        with progress_bar(quiet) as progress:
            task = progress.add_task("mask images", total=len(names), status="")
            masks = rows["mask"].to_pylist()
            _write_masks(folder, results, masks, names, lambda: progress.advance(task))
        for stale in sorted(earlier - set(names)):
            (folder / stale).unlink(missing_ok=True)
        shown_names = pa.array([readable_path(name) for name in names], pa.string())
        index = spreadsheet_table(rows.add_column(1, "mask_image", shown_names))
        write_atomically(folder / MASK_INDEX, lambda temporary: pa_csv.write_csv(index, temporary))
        record.update(
            complete=True,
            written_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            masks=len(names),
            files=names,
        )
        _write_record(folder, record)
    except OSError as error:
        raise PsicbatchError(
            f"{readable_path(folder)}: cannot write the mask export ({error.strerror or error})"
        ) from None
    return f"{len(names)} masks (1-bit PNG) of {table.num_rows} images, listed in {MASK_INDEX}"


def _masked(table: pa.Table) -> pa.BooleanArray:
    """Which rows' masks have a defect pixel."""
    readable = pc.is_null(table["error"])
    return pc.and_(readable, pc.greater(pc.fill_null(table["mask_area"], 0), 0)).combine_chunks()


def _earlier_files(folder: Path, overwrite: bool) -> set[str]:
    """The files an earlier export wrote in ``folder`` (none for a new or empty folder);
    a folder of other files, or an earlier export without ``overwrite``, is refused."""
    check_output_folder(folder, MASK_RECORD, "mask export", "--mask-images")
    record_path = folder / MASK_RECORD
    if not record_path.is_file():
        return set()
    shown = readable_path(folder)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("generator") != GENERATOR:
            raise ValueError("made by something else")
        files = {str(name) for name in record["files"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PsicbatchError(
            f"{shown}: its {MASK_RECORD} is not a psicbatch mask export's record ({error}); "
            "choose another --mask-images"
        ) from None
    if not overwrite:
        raise PsicbatchError(
            f"{shown}: holds an earlier psicbatch mask export; pass --overwrite to replace "
            "it, or choose another --mask-images"
        )
    if any(os.path.isabs(name) or ".." in Path(name).parts for name in files):
        raise PsicbatchError(f"{shown}: its {MASK_RECORD} names files outside the folder")
    return files


def _check_targets(folder: Path, names: list[str], earlier: set[str]) -> None:
    """Refuse, before writing anything, a mask name that a file the export did not write
    already holds."""
    for name in names:
        target = folder / name
        if name not in earlier and os.path.lexists(target):
            raise PsicbatchError(
                f"{readable_path(target)}: exists and was not written by a psicbatch mask "
                "export; refusing to replace it (choose another --mask-images)"
            )


def _decoded(mask: dict[str, Any] | None, results: Path, name: str) -> np.ndarray:
    """A row's mask as a bool array; a damaged one (an edited file) is a one-line error."""
    try:
        return decode(mask or {})
    except ValueError as error:
        raise PsicbatchError(
            f"{readable_path(results)}: the mask for {readable_path(name)} cannot be decoded "
            f"({error}); the export stopped there (masks.json says so)"
        ) from None


def _write_masks(
    folder: Path,
    results: Path,
    masks: list[dict[str, Any] | None],
    names: list[str],
    advance: Callable[[], object],
) -> None:
    """Each mask decoded and written to its name, by one thread per available CPU (PNG
    encoding and file writes release the GIL); ``advance`` after each, in order."""

    def write(item: tuple[dict[str, Any] | None, str]) -> None:
        mask, name = item
        _write_mask(folder / name, _decoded(mask, results, name))

    workers = available_cpus()
    items = zip(masks, names, strict=True)
    for _ in staged(items, write, depth=2 * workers, name="mask-images", workers=workers):
        advance()


def _write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(mask))  # bool: PIL's mode "1"
    write_atomically(path, lambda temporary: image.save(temporary, format="PNG"))


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    text = json.dumps(record, indent=2)
    write_atomically(folder / MASK_RECORD, lambda temporary: temporary.write_text(text))
