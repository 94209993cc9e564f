"""One image's result: the single definition the results table's columns come from.

Rows are built as ``ResultRow`` (a misspelt or missing field is an error where the row
is made, not a column silently left empty) and cross to pyarrow as plain dicts; the
results schema (``SCHEMA``) is generated from the fields, in their order. After them,
results and a watch's parts record which version of the file was read
(``output.STAMP_COLUMNS``), as the worker stamps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa

from psicbatch.paths import path_bytes, readable_path

RLE_TYPE = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])
BOX_TYPE = pa.struct([("x", pa.int32()), ("y", pa.int32()), ("w", pa.int32()), ("h", pa.int32())])


def _arrow(arrow_type: pa.DataType, nullable: bool = True) -> dict[str, Any]:
    return {"arrow": arrow_type, "nullable": nullable}


@dataclass
class ResultRow:
    """A results-table row; ``input_index`` (the position in the input list) is kept
    only in the part files of an unfinished run."""

    input_index: int
    # the name as text (invalid UTF-8 as U+FFFD), and exactly
    path: str = field(metadata=_arrow(pa.string(), nullable=False))
    path_bytes: bytes = field(metadata=_arrow(pa.binary(), nullable=False))
    width: int | None = field(default=None, metadata=_arrow(pa.int32()))
    height: int | None = field(default=None, metadata=_arrow(pa.int32()))
    probability: float | None = field(default=None, metadata=_arrow(pa.float32()))
    is_defect: bool | None = field(default=None, metadata=_arrow(pa.bool_()))
    mask: dict[str, Any] | None = field(default=None, metadata=_arrow(RLE_TYPE))  # COCO RLE
    mask_area: int | None = field(default=None, metadata=_arrow(pa.int64()))
    mask_bbox: dict[str, int] | None = field(default=None, metadata=_arrow(BOX_TYPE))
    seg_max: float | None = field(default=None, metadata=_arrow(pa.float32()))
    error: str | None = field(default=None, metadata=_arrow(pa.string()))
    # tiled models: the tile whose probability decided (the image's highest)
    tile: dict[str, int] | None = field(default=None, metadata=_arrow(BOX_TYPE))

    @classmethod
    def for_file(cls, index: int, path: Path, **values: Any) -> ResultRow:
        return cls(index, readable_path(path), path_bytes(path), **values)

    def as_dict(self) -> dict[str, Any]:
        """Every field, in order (a shallow copy: no per-field copying on the hot path)."""
        return dict(vars(self))


SCHEMA = pa.schema(
    [
        pa.field(f.name, f.metadata["arrow"], nullable=f.metadata["nullable"])
        for f in fields(ResultRow)
        if "arrow" in f.metadata
    ]
)


def error_row(index: int, path: Path, message: str) -> dict[str, Any]:
    """The row of an image that could not be inspected: its name and why."""
    return ResultRow.for_file(index, path, error=message).as_dict()
