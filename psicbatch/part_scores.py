"""Decisions per part: the images of one part (the sides of a commutator, a part's cameras)
judged together, as a line rejects or passes the part and not each image.

A part is defective when any of its images is, and judged defective (rejected) when any of
its images is judged so. A line's escapes and false rejects are counted in parts: one image
judged good among a defective part's eight costs nothing while another image of it is
caught, and one good image judged defective rejects its whole part. A part's probability
is its images' largest, which ranks parts for AUC and AP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from psicbatch import metrics

DATASET_GROUPS = "the dataset's groups"


@dataclass(frozen=True)
class PartScores:
    """The image decision counted over parts; present only where some part has several
    images (otherwise the image figures are the part figures)."""

    parts: int
    largest: int  # images of the largest part
    defective: int  # parts with a defective image
    escapes: int  # defective parts none of whose images was judged defective
    false_rejects: int  # good parts with an image judged defective
    caught_elsewhere: int  # defective parts rejected only by images without a defect
    auc: float  # of a part's largest probability; NaN where all parts are of one kind
    ap: float
    grouping: str = DATASET_GROUPS  # what made the parts: a dataset's groups, a pattern

    @property
    def good(self) -> int:
        return self.parts - self.defective


def grouping_of(group_by: str | None) -> str:
    """What made the parts, as reports name it: the dataset's groups, or ``--group-by``."""
    return DATASET_GROUPS if group_by is None else f"--group-by {group_by}"


def part_scores(
    rows: Sequence[dict[str, Any]], grouping: str = DATASET_GROUPS
) -> PartScores | None:
    """The part figures of per-image rows (``evaluate.image_row``: ``part``,
    ``is_defective``, ``predicted_defective``, ``probability``); None where every part is
    one image, or where rows predate the ``part`` column."""
    if not rows or any(row.get("part") is None for row in rows):
        return None
    of = PartIndex.of([row["part"] for row in rows])
    if not of.joins_images:
        return None
    defective_image = np.array([row["is_defective"] for row in rows], bool)
    judged_image = np.array([row["predicted_defective"] for row in rows], bool)
    defective = of.any(defective_image)
    judged = of.any(judged_image)
    caught_on_defect = of.any(defective_image & judged_image)
    largest = of.max(np.array([row["probability"] for row in rows], float))
    ranked = 0 < defective.sum() < of.count  # parts of both kinds, or no ranking to score
    return PartScores(
        parts=of.count,
        largest=int(of.sizes.max()),
        defective=int(defective.sum()),
        escapes=int((defective & ~judged).sum()),
        false_rejects=int((~defective & judged).sum()),
        caught_elsewhere=int((defective & judged & ~caught_on_defect).sum()),
        auc=metrics.roc_auc(defective, largest) if ranked else math.nan,
        ap=metrics.average_precision(defective, largest) if ranked else math.nan,
        grouping=grouping,
    )


@dataclass(frozen=True)
class PartIndex:
    """Which part each image belongs to, for reducing per-image values to per-part ones."""

    index: np.ndarray  # each image's part, 0..count-1
    count: int

    @classmethod
    def of(cls, parts: Sequence[str]) -> PartIndex:
        names, index = np.unique(np.asarray(parts, dtype=str), return_inverse=True)
        return cls(index.reshape(-1), len(names))

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.index, minlength=self.count)

    @property
    def joins_images(self) -> bool:
        """Whether some part has several images (otherwise parts are images)."""
        return bool(self.count) and int(self.sizes.max()) > 1

    def any(self, values: np.ndarray) -> np.ndarray:
        """For each part, whether any of its images' ``values`` is true."""
        return np.bincount(self.index, weights=values.astype(float), minlength=self.count) > 0

    def max(self, values: np.ndarray) -> np.ndarray:
        """For each part, the largest of its images' ``values``."""
        largest = np.full(self.count, -np.inf)
        np.maximum.at(largest, self.index, values)
        return largest
