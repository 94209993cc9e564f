"""Two runs' results on the same images side by side (``report NEW --compare-to OLD``).

Before a line switches to a retrained model, another engine or new decisions, running
them on the line's own recent images beside the results it has shows what would change:
which parts would now be judged defective or good, how far the probabilities move, and
whether the masks of the parts both judge defective still agree. No labels are needed,
and nothing is inferred again: both runs' rows are read as they were written.

A day of a line's results can hold millions of rows, so the rows are matched in Arrow;
only the changed decisions a page shows and the masks compared become Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from psicbatch.metrics import mask_iou
from psicbatch.run import rle
from psicbatch.run.results import KEY, ROW, latest_rows

THERE = "_there"  # the other run's columns, once joined
COMPARED = ("probability", "is_defect", "error", "file_size")
MASKS_AT_ONCE = 4096  # masks made Python objects at a time


@dataclass
class ComparedRuns:
    """What two results tables say of the images both hold (by path), and what only one
    of them holds."""

    both: int = 0  # images with a result, no error, in both
    only_here: int = 0  # images of this run the other lacks (or has only an error for)
    only_there: int = 0
    changed_files: int = 0  # same path, another file (its size differs): not compared
    judged: dict[str, int] = field(default_factory=dict)  # "defective/good": here/there
    shifts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # |probability change|
    mask_ious: list[float] = field(default_factory=list)  # of images both judge defective
    changed: pa.Table = field(default_factory=lambda: pa.table({}))  # their rows here, there

    @property
    def newly_defective(self) -> int:
        return self.judged.get("defective/good", 0)

    @property
    def newly_good(self) -> int:
        return self.judged.get("good/defective", 0)

    def changed_rows(self, start: int, stop: int) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
        """The row numbers, here and there, of the changed decisions ``start:stop``
        (largest probability change first)."""
        rows = self.changed.slice(start, max(0, stop - start))
        return rows[ROW], rows[f"{ROW}{THERE}"]

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
    inspected twice counts with its last result, none where that is an error)."""
    ours, theirs = _usable_rows(here), _usable_rows(there)
    joined = ours.join(theirs, KEY, join_type="inner", right_suffix=THERE)
    compared = ComparedRuns(
        only_here=ours.num_rows - joined.num_rows, only_there=theirs.num_rows - joined.num_rows
    )
    if {"file_size", f"file_size{THERE}"} <= set(joined.column_names):
        sizes = joined["file_size"], joined[f"file_size{THERE}"]
        other_file = pc.fill_null(pc.not_equal(*sizes), False)  # unknown sizes: the same
        compared.changed_files = pc.sum(other_file).as_py() or 0
        joined = joined.filter(pc.invert(other_file))
    compared.both = joined.num_rows
    now, was = joined["is_defect"], joined[f"is_defect{THERE}"]
    for verdict, mask in (
        ("defective/defective", pc.and_(now, was)),
        ("defective/good", pc.and_(now, pc.invert(was))),
        ("good/defective", pc.and_(pc.invert(now), was)),
        ("good/good", pc.and_(pc.invert(now), pc.invert(was))),
    ):
        compared.judged[verdict] = pc.sum(mask).as_py() or 0
    shift = pc.abs(pc.subtract(joined["probability"], joined[f"probability{THERE}"]))
    compared.shifts = shift.to_numpy().astype(float)
    changed = joined.append_column("_shift", shift).filter(pc.not_equal(now, was))
    order = changed.sort_by([("_shift", "descending")])
    compared.changed = order.select([ROW, f"{ROW}{THERE}"])
    both = joined.filter(pc.and_(now, was))
    compared.mask_ious = _mask_agreement(here, there, both[ROW], both[f"{ROW}{THERE}"])
    return compared


def _usable_rows(table: pa.Table) -> pa.Table:
    """The last row of each file where that row has no error, with its number in
    ``table``: the columns the comparison reads."""
    latest = latest_rows(table, [name for name in COMPARED if name in table.column_names])
    return latest.filter(pc.is_null(latest["error"])).drop_columns(["error"])


def _mask_agreement(
    here: pa.Table, there: pa.Table, ours: pa.ChunkedArray, theirs: pa.ChunkedArray
) -> list[float]:
    """The IoU of the two runs' masks of each image both judged defective (rows ``ours``
    here, ``theirs`` there); an image whose masks are both empty, or that cannot be
    decoded, is left out."""
    ious = []
    for start in range(0, len(ours), MASKS_AT_ONCE):  # a day's defects: not all at once
        chunk = slice(start, start + MASKS_AT_ONCE)
        masks = zip(
            here["mask"].take(ours[chunk]).to_pylist(),
            there["mask"].take(theirs[chunk]).to_pylist(),
            strict=True,
        )
        for mask, other in masks:
            try:
                a, b = rle.decode(mask), rle.decode(other)
            except ValueError:
                continue
            if a.shape == b.shape and (a.any() or b.any()):
                ious.append(mask_iou(b, a))
    return ious
