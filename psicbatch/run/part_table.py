"""A run's results counted in parts (``report --parts-csv``): a line passes or rejects a
part, and a part is often several images (its sides, its cameras). A part is rejected when
any of its images was judged defective, passes when all were judged good, and is unknown
when none was judged defective but one could not be inspected (its row is an error).
Where the line says how many images a part has, a part with fewer, none of them judged
defective, is incomplete rather than passed: a side that was never imaged was never
inspected.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from psicbatch.data.splits import GROUP_PREFIX, group_name, pattern_groups
from psicbatch.paths import file_head
from psicbatch.run.output_guard import OutputKind, write_checked
from psicbatch.run.part_files import PART_COLUMNS
from psicbatch.run.results import ROW, latest_rows, read_results_table
from psicbatch.run.spreadsheet import spreadsheet_table
from psicbatch.wording import counted

PATH_SEPARATOR = " | "
DECISIONS = ("reject", "unknown", "incomplete", "pass")  # the order parts are listed in


@dataclass(frozen=True)
class PartGrouping:
    """How a run's images make parts: ``pattern``'s match in their paths (``data.splits``:
    its first capture group, if it has one), and where given, how many images a part has."""

    pattern: str
    images: int | None = None


def verdict(judged_defective: int, errors: int, images: int, expected: int | None = None) -> str:
    """A part's decision from its ``images``: ``reject`` when any was judged defective,
    ``unknown`` when none was but one could not be inspected, ``incomplete`` when fewer
    than ``expected`` were inspected, ``pass`` otherwise."""
    if judged_defective:
        return "reject"
    if errors:
        return "unknown"
    return "incomplete" if expected is not None and images < expected else "pass"


def part_of(compiled: re.Pattern[str], path: str) -> str:
    """A path's part: the pattern's match (its first group, if it has one, even an empty
    one), or the path itself where it does not match. What ``part_names`` gives each path,
    one path at a time (a watch's images, as they come)."""
    name = group_name(compiled, path)
    return path if name is None else name


def part_names(paths: list[str], pattern: str) -> list[str]:
    """Each path's part: ``pattern``'s match in it (its first group, if it has one), or
    the path itself where it does not match."""
    names = pattern_groups(paths, pattern, "path")
    return [
        path if name is None else name.removeprefix(GROUP_PREFIX)
        for path, name in zip(paths, names, strict=True)
    ]


# What part_table takes of a part's images' last results, and what it reads of the
# results: those, and each image's file (``latest_rows`` knows a file by its path's bytes).
PART_RESULTS = ["path", "is_defect", "probability", "error"]
PART_INPUTS = [*PART_RESULTS, "path_bytes"]


def part_table(table: pa.Table, grouping: PartGrouping, names: list[str] | None = None) -> pa.Table:
    """One row per part: its images' last results (a watch may inspect a replaced file
    again), grouped as ``grouping`` says; a path the pattern does not match is a part of
    its own. ``names``: every row's part (``part_names``), where the caller has them
    already (the pattern is then not matched again)."""
    latest = latest_rows(table, PART_RESULTS)
    if names is None:
        parts = part_names(latest["path"].to_pylist(), grouping.pattern)
    else:
        parts = [names[row] for row in latest[ROW].to_pylist()]
    errored = pc.is_valid(latest["error"])
    rows = pa.table(
        {
            "part": parts,
            "judged": pc.and_(pc.fill_null(latest["is_defect"], False), pc.invert(errored)),
            "errored": errored,
            "probability": pc.if_else(errored, None, latest["probability"]),
        }
    )
    per_part = rows.group_by("part").aggregate(
        [
            ("part", "count"),
            ("judged", "sum"),
            ("errored", "sum"),
            ("probability", "max"),
        ]
    )
    listed = (
        pa.table({"part": parts, "path": latest["path"]})
        .filter(rows["judged"])
        .group_by("part")
        .aggregate([("path", "list")])
    )
    joined = pc.binary_join(listed["path_list"], PATH_SEPARATOR)  # joins take no lists
    judged_paths = pa.table({"part": listed["part"], "defective_images": joined})
    per_part = per_part.join(judged_paths, "part", join_type="left outer")
    judged, errors, images = (
        per_part[name] for name in ("judged_sum", "errored_sum", "part_count")
    )
    decision = pa.array(
        [
            verdict(*counts, grouping.images)
            for counts in zip(
                judged.to_pylist(), errors.to_pylist(), images.to_pylist(), strict=True
            )
        ]
    )
    order = pc.index_in(decision, pa.array(DECISIONS))
    result = pa.table(
        [
            per_part["part"],
            decision,
            images,
            judged,
            errors,
            per_part["probability_max"],
            pc.fill_null(per_part["defective_images"], ""),
        ],
        names=PART_COLUMNS,
    )
    return (
        result.append_column("_order", order)
        .sort_by([("_order", "ascending"), ("part", "ascending")])
        .drop_columns(["_order"])
    )


def write_part_table(results: Path, csv_path: Path, grouping: PartGrouping) -> str:
    """Write the table atomically, only over nothing or an earlier one; what it holds, in
    a few words."""
    table, _ = read_results_table(results, PART_INPUTS)
    parts = part_table(table, grouping)
    safe = spreadsheet_table(parts)  # a part named by a file name is never a formula
    write_checked(csv_path, PARTS_TABLE, lambda temporary: pa_csv.write_csv(safe, temporary))
    return part_counts(parts)


def part_counts(parts: pa.Table) -> str:
    """``120 parts of 960 images: 3 rejected, 117 passed`` (and those unknown)."""
    counts = {kind: pc.sum(pc.equal(parts["decision"], kind)).as_py() or 0 for kind in DECISIONS}
    unknown = f", {counts['unknown']} unknown (an image not inspected)" if counts["unknown"] else ""
    incomplete = (
        f", {counts['incomplete']} incomplete (images missing)" if counts["incomplete"] else ""
    )
    images = pc.sum(parts["images"]).as_py() or 0
    return (
        f"{counted(parts.num_rows, 'part')} of {counted(images, 'image')}: "
        f"{counts['reject']} rejected, {counts['pass']} passed{unknown}{incomplete}"
    )


def is_part_table(path: Path) -> bool:
    """A CSV file whose header is the one this module writes."""
    try:
        first_line = file_head(path).split(b"\n", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return next(csv.reader([first_line]), []) == PART_COLUMNS


PARTS_TABLE = OutputKind("part table", "--parts-csv", is_part_table, "CSV", (".csv",))
