"""A watch's results over time on the report's page: images per stretch of the day and
the share judged defective, in bins as wide as the span needs."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.run.timeline import timeline

START = datetime.datetime(2026, 12, 6, 8, 0, tzinfo=datetime.timezone.utc)


def _rows(*spec: tuple[float, bool, bool]) -> pa.Table:
    """Rows at (minutes after 08:00, judged defective, an error)."""
    return pa.table(
        {
            "completed_at": pa.array(
                [START + datetime.timedelta(minutes=m) for m, _, _ in spec],
                pa.timestamp("us", "UTC"),
            ),
            "is_defect": [None if error else judged for _, judged, error in spec],
            "error": ["damaged" if error else None for _, _, error in spec],
        }
    )


def test_images_are_counted_in_bins_as_wide_as_the_span_needs() -> None:
    morning = [(1, False, False)] * 6 + [(2, True, False), (3, False, True)]
    later = [(150 + i / 2, i < 3, False) for i in range(6)]  # 10:30: three of six defective
    line = timeline(_rows(*morning, *later))
    assert line is not None and line.width == 300 and line.width_said() == "5 minutes"
    assert line.start == START and len(line.images) == 31  # 08:00 to 10:35
    assert (line.images[0], line.defective[0], line.errors[0]) == (8, 1, 1)
    assert (line.images[30], line.defective[30]) == (6, 3)
    assert line.images[1:30].sum() == 0  # the line stopped: bins without images
    rates = line.rates()
    assert rates[0] == 100 / 7 and rates[30] == 50 and np.isnan(rates[1])
    assert line.highest() == (
        "highest share judged defective 2026-12-06 10:30–10:35 UTC: 50.0% of 6 readable "
        "images (all of them: 30.8%)"
    )
    days = timeline(_rows((0, False, False), (3 * 24 * 60, True, False)))  # three days
    assert days is not None and days.width_said() == "4 hours" and len(days.images) == 19
    assert days.highest() is None  # no bin with five readable images names a rate
    assert timeline(_rows((0, False, False), (0.5, True, False))) is None  # one bin
    assert timeline(_rows((0, False, False)).drop_columns(["completed_at"])) is None
    older = pa.concat_tables(  # a part written before rows had times: left out
        [_rows((0, True, False), (90, False, False)), _rows((5, True, False)).drop_columns(
            ["completed_at"])], promote_options="permissive"
    )  # fmt: skip
    counted = timeline(older)
    assert counted is not None and counted.images.sum() == 2 and counted.defective.sum() == 1


def test_the_page_of_a_watch_shows_its_images_over_time(tmp_path: Path) -> None:
    generate(tmp_path / "data", 12, (64, 64), defect_rate=0.5, seed=4)
    results = tmp_path / "results.parquet"
    ran = CliRunner().invoke(
        main, ["run", str(tmp_path / "data" / "images"), "-o", str(results), "-q"]
    )
    assert ran.exit_code == 0, ran.output
    table = pq.read_table(results)
    out = tmp_path / "watch"  # the same rows as a watch's folder: six at 08:00, six at 10:30
    (out).mkdir()
    (out / "_watch.json").write_text(json.dumps({"sources": [str(tmp_path / "data")]}))
    for hour, minutes, rows in ((8, 0, table.slice(0, 6)), (10, 30, table.slice(6))):
        stamp = START.replace(hour=hour, minute=minutes)
        times = pa.array([stamp] * rows.num_rows, pa.timestamp("us", "UTC"))
        folder = out / "date=2026-12-06" / f"hour={hour:02d}"
        folder.mkdir(parents=True)
        pq.write_table(rows.append_column("completed_at", times), folder / "part-1.parquet")
    page = tmp_path / "page.html"
    shown = CliRunner().invoke(main, ["report", str(out), "--html", str(page)])
    assert shown.exit_code == 0, shown.output
    text = page.read_text()
    assert "<h2>Over time</h2><p>Images per 5 minutes" in text
    assert "highest share judged defective 2026-12-06 " in text
    plain = CliRunner().invoke(main, ["report", str(results), "--html", str(page), "--overwrite"])
    assert plain.exit_code == 0 and "Over time" not in page.read_text()  # no time per image
