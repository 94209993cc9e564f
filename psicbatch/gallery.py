"""The images an evaluation got most wrong, kept while it streams.

A person checking an engine asks first which parts it missed, which good parts it
rejected and where its masks are poor. Each kind keeps its ``size`` worst images, with
their true and predicted masks already shrunk to thumbnail size, so the evaluation's page
costs bounded memory on a test set of any size.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psicbatch.pictures import shrink_mask, thumbnail_size

GALLERY_SIZE = 24
THUMBNAIL_HEIGHT = 220

Row = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    title: str
    order: str  # how the kind's images are listed, worst first
    chosen: Callable[[Row], bool]
    badness: Callable[[Row], float]


KINDS = (
    Kind(
        "Missed defects",
        "defective images judged defect-free, lowest defect probability first",
        lambda row: row["is_defective"] and not row["predicted_defective"],
        lambda row: 1.0 - row["probability"],
    ),
    Kind(
        "False alarms",
        "defect-free images judged defective, highest defect probability first",
        lambda row: not row["is_defective"] and row["predicted_defective"],
        lambda row: row["probability"],
    ),
    Kind(
        "Poorest masks",
        "defective images judged defective, lowest mask IoU first",
        lambda row: (
            row["is_defective"] and row["predicted_defective"] and not math.isnan(row["mask_iou"])
        ),
        lambda row: 1.0 - row["mask_iou"],
    ),
)


@dataclass(order=True)
class Example:
    badness: float
    order: int  # minus the image's position: of equally bad images the first seen ranks first
    row: Row = field(compare=False)
    truth: np.ndarray = field(compare=False)  # bool, thumbnail size
    predicted: np.ndarray = field(compare=False)


class Gallery:
    def __init__(self, size: int = GALLERY_SIZE) -> None:
        self.size = size
        self.counts = {kind.title: 0 for kind in KINDS}
        self._examples: dict[str, list[Example]] = {kind.title: [] for kind in KINDS}
        self._seen = 0

    def offer(self, row: Row, truth: np.ndarray | None, predicted: np.ndarray) -> None:
        """Consider one scored image (its masks as scored, at the original size; no true
        mask where its defect's pixels are not labelled)."""
        self._seen += 1
        if truth is None:
            truth = np.zeros_like(predicted)
        for kind in KINDS:
            if not kind.chosen(row):
                continue
            self.counts[kind.title] += 1
            kept = self._examples[kind.title]
            rank = (kind.badness(row), -self._seen)
            if len(kept) == self.size and rank <= (kept[0].badness, kept[0].order):
                continue
            size = thumbnail_size(truth.shape, THUMBNAIL_HEIGHT)
            example = Example(*rank, row, shrink_mask(truth, size), shrink_mask(predicted, size))
            if len(kept) == self.size:
                heapq.heapreplace(kept, example)
            else:
                heapq.heappush(kept, example)

    def worst(self, kind: Kind) -> list[Example]:
        return sorted(self._examples[kind.title], reverse=True)
