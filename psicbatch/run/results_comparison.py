"""Two runs' results on the same images side by side (``report NEW --compare-to OLD``).

Before a line switches to a retrained model, another engine or new decisions, running
them on the line's own recent images beside the results it has shows what would change:
which parts would now be judged defective or good, how far the probabilities move, and
whether the masks of the parts both judge defective still agree. No labels are needed,
and nothing is inferred again: both runs' rows are read as they were written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from psicbatch.metrics import mask_iou
from psicbatch.run import rle

USED = ("path", "path_bytes", "probability", "is_defect", "mask_area", "error", "file_size")


@dataclass
class ComparedRuns:
    """What two results tables say of the images both hold (by path), and what only one
    of them holds."""

    both: int = 0  # images with a result, no error, in both
    only_here: int = 0  # images of this run the other lacks (or has only an error for)
    only_there: int = 0
    changed_files: int = 0  # same path, another file (its size differs): not compared
    judged: dict[str, int] = field(default_factory=dict)  # "defective/good" here/there
    shifts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # |probability change|
    mask_ious: list[float] = field(default_factory=list)  # of images both judge defective
    changed: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    @property
    def newly_defective(self) -> int:
        return self.judged.get("defective/good", 0)

    @property
    def newly_good(self) -> int:
        return self.judged.get("good/defective", 0)

    def line(self) -> str:
        """The comparison in one line, for the terminal."""
        if not self.both:
            return (
                f"no image has a result in both runs ({self.only_here} only here, "
                f"{self.only_there} only there): they name their images by other paths"
            )
        alike = self.both - self.newly_defective - self.newly_good
        parts = [
            f"{self.both} images in both: {self.newly_defective} now judged defective, "
            f"{self.newly_good} now judged good, {alike} judged alike",
            f"probability change median {np.median(self.shifts):.3g}, largest "
            f"{np.max(self.shifts):.3g}",
        ]
        if self.mask_ious:
            parts.append(
                f"masks of the {len(self.mask_ious)} images both judge defective agree at "
                f"mean IoU {np.mean(self.mask_ious):.3f}"
            )
        apart = [
            f"{count} {what}"
            for count, what in (
                (self.only_here, "only here"),
                (self.only_there, "only there"),
                (self.changed_files, "files changed between the runs"),
            )
            if count
        ]
        return "; ".join(parts) + (f" ({', '.join(apart)})" if apart else "")


def compare_results(here: pa.Table, there: pa.Table) -> ComparedRuns:
    """Each image's result in ``here`` against its result in ``there`` (by path; an image
    inspected twice counts with its last result). Images whose decisions differ come
    with both rows (their ``index`` in each table; masks not read), largest probability
    change first."""
    ours, theirs = _usable_rows(here), _usable_rows(there)
    compared = ComparedRuns()
    shared = [key for key in ours if key in theirs]
    compared.only_here = len(ours) - len(shared)
    compared.only_there = len(theirs) - len(shared)
    both_defective: list[tuple[int, int]] = []
    shifts, changed = [], []
    for key in shared:
        row, other = ours[key], theirs[key]
        if _other_file(row, other):
            compared.changed_files += 1
            continue
        verdict = f"{_judged(row)}/{_judged(other)}"
        compared.judged[verdict] = compared.judged.get(verdict, 0) + 1
        shifts.append(abs(row["probability"] - other["probability"]))
        if row["is_defect"] != other["is_defect"]:
            changed.append((row, other))
        elif row["is_defect"]:
            both_defective.append((row["index"], other["index"]))
    compared.both = len(shifts)
    compared.shifts = np.array(shifts, dtype=float)
    compared.changed = sorted(
        changed, key=lambda pair: -abs(pair[0]["probability"] - pair[1]["probability"])
    )
    compared.mask_ious = _mask_agreement(here, there, both_defective)
    return compared


def _usable_rows(table: pa.Table) -> dict[bytes, dict[str, Any]]:
    """Rows without an error by their file's path (bytes, exactly), the last one where a
    path repeats, each with its row number in ``table``."""
    columns = [name for name in USED if name in table.column_names]
    rows: dict[bytes, dict[str, Any]] = {}
    for index, row in enumerate(table.select(columns).to_pylist()):
        key = row.get("path_bytes") or os.fsencode(row["path"])
        if row["error"] is None:
            rows[key] = {**row, "index": index}
        else:
            rows.pop(key, None)  # the last result is an error: no decision to compare
    return rows


def _other_file(row: dict[str, Any], other: dict[str, Any]) -> bool:
    sizes = (row.get("file_size"), other.get("file_size"))
    return None not in sizes and sizes[0] != sizes[1]


def _judged(row: dict[str, Any]) -> str:
    return "defective" if row["is_defect"] else "good"


def _mask_agreement(here: pa.Table, there: pa.Table, pairs: list[tuple[int, int]]) -> list[float]:
    """The IoU of the two runs' masks of each image both judged defective (an image whose
    masks are both empty, or that cannot be decoded, is left out)."""
    if not pairs:
        return []
    ours = here.column("mask").take([a for a, _ in pairs]).to_pylist()
    theirs = there.column("mask").take([b for _, b in pairs]).to_pylist()
    ious = []
    for mask, other in zip(ours, theirs, strict=True):
        try:
            a, b = rle.decode(mask), rle.decode(other)
        except ValueError:
            continue
        if a.shape == b.shape and (a.any() or b.any()):
            ious.append(mask_iou(b, a))
    return ious
