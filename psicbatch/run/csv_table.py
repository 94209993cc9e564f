"""A results file or ``--watch`` folder as one CSV table, for spreadsheets and line
systems that do not read Parquet.

One row per image, with the results table's columns in their order, as ``spreadsheet``
makes cells of them (boxes split into columns, no masks, never a formula). Where the
images make parts (``report --group-by``, or the parts a watch decided), two last columns
give each row its ``part`` and the part's decision (``part_decision``, as ``report
--parts-csv`` gives it), so that a spreadsheet filters a part's images or a rejected
part's.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv

from psicbatch.paths import file_head
from psicbatch.run.output_guard import OutputKind, write_checked
from psicbatch.run.part_table import PartGrouping, part_names, part_table
from psicbatch.run.results import read_results_table
from psicbatch.run.spreadsheet import spreadsheet_table

FIRST_COLUMNS = ["path", "width", "height", "probability", "is_defect"]  # how one is known


def write_csv_table(results: Path, csv_path: Path, grouping: PartGrouping | None = None) -> str:
    """Write the table atomically, only over nothing or an earlier one; what it holds,
    in a few words."""
    table, _ = read_results_table(results)
    flat = spreadsheet_table(table if grouping is None else with_parts(table, grouping))
    write_checked(csv_path, CSV_TABLE, lambda temporary: pa_csv.write_csv(flat, temporary))
    return f"{flat.num_rows} rows, {flat.num_columns} columns"


def with_parts(table: pa.Table, grouping: PartGrouping) -> pa.Table:
    """The rows with their ``part`` and its ``part_decision`` (an image inspected again
    gets its part's decision on its last result, as every row of the part does)."""
    parts = part_names(table["path"].to_pylist(), grouping.pattern)
    decided = part_table(table, grouping, parts)
    decision_of = dict(
        zip(decided["part"].to_pylist(), decided["decision"].to_pylist(), strict=True)
    )
    decisions = [decision_of[part] for part in parts]
    return table.append_column("part", pa.array(parts, pa.string())).append_column(
        "part_decision", pa.array(decisions, pa.string())
    )


def is_results_table(path: Path) -> bool:
    """A CSV file whose header begins as this module writes one."""
    try:
        first_line = file_head(path).split(b"\n", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return False
    header = next(csv.reader([first_line]), [])
    return header[: len(FIRST_COLUMNS)] == FIRST_COLUMNS


CSV_TABLE = OutputKind("CSV table", "--csv", is_results_table, "CSV", (".csv",))
