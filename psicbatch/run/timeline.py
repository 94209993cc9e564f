"""A watch's results over time, for the report's page: how many images each stretch of the
day brought, and what share of them was judged defective. A rate that climbs over hours (a
lamp ageing, a camera's focus drifting, a bad batch of material) shows here before it
shows in a day's total; a stretch without images is a line that stopped, or a camera.

Images are counted by when their file was complete (``completed_at``, UTC), in bins of
the shortest width (a minute to a day) that makes at most ``MOST_BINS`` of them; an image inspected
again counts each time. A results file records no time per image, so it has none.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from psicbatch.pictures import figure_data_uri

BIN_SECONDS = (60, 300, 900, 3600, 4 * 3600, 86400)  # a minute to a day
MOST_BINS = 48
FEWEST_IMAGES = 5  # a bin with fewer readable images names no rate as the highest


@dataclass(frozen=True)
class Timeline:
    """Counts per bin of ``width`` seconds from ``start`` (UTC, a multiple of the width)."""

    start: datetime.datetime
    width: int
    images: np.ndarray
    defective: np.ndarray
    errors: np.ndarray

    def width_said(self) -> str:
        """``hour``, ``5 minutes``, ``4 hours``: one bin's width in words."""
        single = {60: "minute", 3600: "hour", 86400: "day"}
        if self.width in single:
            return single[self.width]
        hours, minutes = divmod(self.width // 60, 60)
        return f"{hours} hours" if hours and not minutes else f"{self.width // 60} minutes"

    def rates(self) -> np.ndarray:
        """Percent of each bin's readable images judged defective; NaN where it has none."""
        readable = self.images - self.errors
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(readable > 0, 100 * self.defective / readable, np.nan)

    def bin_start(self, index: int) -> datetime.datetime:
        return self.start + datetime.timedelta(seconds=self.width * index)

    def highest(self) -> str | None:
        """The bin with the highest rate among those with ``FEWEST_IMAGES`` readable
        images or more, beside the whole span's rate, in words."""
        readable = self.images - self.errors
        rates = np.where(readable >= FEWEST_IMAGES, self.rates(), np.nan)
        if np.isnan(rates).all():
            return None
        top = int(np.nanargmax(rates))
        overall = 100 * self.defective.sum() / max(readable.sum(), 1)
        begins, ends = self.bin_start(top), self.bin_start(top + 1)
        return (
            f"highest share judged defective {_span(begins, ends)} UTC: {rates[top]:.1f}% of "
            f"{readable[top]} readable images (all of them: {overall:.1f}%)"
        )


def _span(begins: datetime.datetime, ends: datetime.datetime) -> str:
    if ends - begins >= datetime.timedelta(days=1):
        return f"on {begins:%Y-%m-%d}"
    return f"{begins:%Y-%m-%d %H:%M}–{ends:%H:%M}"


def timeline(table: pa.Table) -> Timeline | None:
    """The rows counted over time; None without times (a results file) or where every
    image falls in one bin (nothing to see over time)."""
    if "completed_at" not in table.column_names:
        return None
    table = table.filter(pc.is_valid(table["completed_at"]))  # parts of an older watch lack it
    if table.num_rows == 0:
        return None
    micros = pc.cast(table["completed_at"], pa.int64()).to_numpy()
    seconds = micros // 1_000_000
    first, last = int(seconds.min()), int(seconds.max())
    fitting = (w for w in BIN_SECONDS if last // w - first // w < MOST_BINS)
    width = next(fitting, BIN_SECONDS[-1])  # more than MOST_BINS days: a bin a day
    start = first // width * width
    index = (seconds - start) // width
    if index.max() == 0:
        return None
    errored = pc.is_valid(table["error"])
    judged = pc.and_(pc.fill_null(table["is_defect"], False), pc.invert(errored))
    count = int(index.max()) + 1
    return Timeline(
        start=datetime.datetime.fromtimestamp(start, datetime.timezone.utc),
        width=width,
        images=np.bincount(index, minlength=count),
        defective=np.bincount(index, weights=_flags(judged), minlength=count).astype(int),
        errors=np.bincount(index, weights=_flags(errored), minlength=count).astype(int),
    )


def _flags(flags: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(flags.to_numpy(zero_copy_only=False), dtype=float)


def timeline_figure(line: Timeline) -> str:
    """Images per bin (those not inspected apart) above the share judged defective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = [line.bin_start(i) for i in range(len(line.images))]
    width = datetime.timedelta(seconds=line.width * 0.9)
    figure, (counts, rates) = plt.subplots(2, 1, figsize=(7, 3.6), dpi=100, sharex=True)
    readable = line.images - line.errors
    counts.bar(starts, readable, width=width, align="edge", color="#4063a0", label="inspected")
    if line.errors.any():
        counts.bar(
            starts, line.errors, width=width, align="edge", bottom=readable,
            color="#e0a030", label="errors",
        )  # fmt: skip
        counts.legend(loc="upper left", fontsize="small")
    counts.set(ylabel="images")
    middles = [start + datetime.timedelta(seconds=line.width / 2) for start in starts]
    rates.plot(middles, line.rates(), marker="o", markersize=3, color="#c03030")
    rates.set(ylabel="% defective", xlabel="UTC")
    rates.set_ylim(bottom=0)
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure_data_uri(figure)
