"""Results rows as cells a spreadsheet shows and never evaluates, for every CSV table
psicbatch writes (``report --csv``, ``--parts-csv``, ``masks.csv``, a watch's part files).

A box becomes one column per field (``mask_bbox_x`` ... ``mask_bbox_h``). The mask itself
(a COCO RLE string) and the path's exact bytes stay in the Parquet file: neither is a
cell anyone reads. A text cell that a spreadsheet would take for a formula (beginning with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return) gets a leading ``'``, so opening
a table never evaluates what a file name or an error message says.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

LEFT_IN_PARQUET = ("mask", "path_bytes")
FORMULA_CHARS = "=+-@\t\r"  # a cell beginning with one is a formula to a spreadsheet
FORMULA_START = "^([" + FORMULA_CHARS.replace("-", r"\-") + "])"  # for Arrow's columns


def formula_safe(text: str) -> str:
    """One text cell as ``spreadsheet_table`` writes it: never a formula (a test of its
    first character: a restarted watch names each of a week's parts so)."""
    return f"'{text}" if text.startswith(tuple(FORMULA_CHARS)) else text


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
