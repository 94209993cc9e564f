"""A results file or ``--watch`` folder as one CSV table, for spreadsheets and line
systems that do not read Parquet.

One row per image, with the results table's columns in their order; a box becomes one
column per field (``mask_bbox_x`` ... ``mask_bbox_h``). The mask itself (a COCO RLE
string) and the path's exact bytes stay in the Parquet file: neither is a cell anyone
reads. A text cell that a spreadsheet would take for a formula (beginning with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return) gets a leading ``'``, so opening the
table never evaluates what a file name or an error message says.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from psicbatch.paths import file_head
from psicbatch.run.output_guard import OutputKind, write_checked
from psicbatch.run.results import read_results_table

LEFT_IN_PARQUET = ("mask", "path_bytes")
FIRST_COLUMNS = ["path", "width", "height", "probability", "is_defect"]  # how one is known
FORMULA_START = r"^([=+\-@\t\r])"


def formula_safe(text: str) -> str:
    """One text cell as ``spreadsheet_table`` writes it: never a formula."""
    return re.sub(FORMULA_START, r"'\1", text)


def spreadsheet_table(table: pa.Table) -> pa.Table:
    """Results rows as flat, formula-safe columns."""
    flat = table.drop_columns([c for c in LEFT_IN_PARQUET if c in table.column_names]).flatten()
    columns = [
        pc.replace_substring_regex(column, pattern=FORMULA_START, replacement=r"'\1")
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        else column
        for column in flat.columns
    ]
    return pa.table(columns, names=[name.replace(".", "_") for name in flat.column_names])


def write_csv_table(results: Path, csv_path: Path) -> str:
    """Write the table atomically, only over nothing or an earlier one; what it holds,
    in a few words."""
    table, _ = read_results_table(results)
    flat = spreadsheet_table(table)
    write_checked(csv_path, CSV_TABLE, lambda temporary: pa_csv.write_csv(flat, temporary))
    return f"{flat.num_rows} rows, {flat.num_columns} columns"


def is_results_table(path: Path) -> bool:
    """A CSV file whose header begins as this module writes one."""
    try:
        first_line = file_head(path).split(b"\n", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return False
    header = next(csv.reader([first_line]), [])
    return header[: len(FIRST_COLUMNS)] == FIRST_COLUMNS


CSV_TABLE = OutputKind("CSV table", "--csv", is_results_table, "CSV", (".csv",))
