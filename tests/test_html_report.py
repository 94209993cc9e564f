from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.decisions import Decisions, Rule
from psicbatch.engines.frequency_conv import large_kernel_method
from psicbatch.engines.manifest import FREQUENCY_DOMAIN
from psicbatch.precision import cpu_auto
from psicbatch.run import html_report
from psicbatch.run.results import read_results_table
from psicbatch.run.spreadsheet import spreadsheet_table
from tests.fresh_process import exits_in_a_fresh_process


def test_html_report_shows_every_listed_defect(tmp_path: Path) -> None:
    generate(tmp_path / "data", 16, (96, 112), defect_rate=0.5, seed=8)
    (tmp_path / "data" / "images" / "broken.png").write_text("not an image")
    results = tmp_path / "results.parquet"
    runner = CliRunner()
    run = runner.invoke(
        main,
        [
            "run",
            str(tmp_path / "data" / "images"),
            "--out",
            str(results),
            "-q",
            "--decoder",
            "pil",
            "--allow-errors",
        ],
    )
    assert run.exit_code == 0, run.output
    page = tmp_path / "report.html"
    result = runner.invoke(main, ["report", str(results), "--html", str(page), "--top", "5"])
    assert result.exit_code == 0, result.output
    counts = re.search(r"wrote .*report.html: 17 images, (\d+) defective, 1 error\b", result.output)
    assert counts is not None, result.output
    text = page.read_text()
    listed = re.search(r"Most likely defects \((\d+) of (\d+)\)", text)
    assert listed is not None
    shown, found = int(listed.group(1)), int(listed.group(2))
    assert found > 0 and shown == min(5, found)
    assert int(counts.group(1)) == found
    defects = text.split("Most likely defects")[1].split("Nearest the threshold")[0]
    figures = r'<figure class="defect"><img src="data:image/png;base64,'
    assert len(re.findall(figures, defects)) == shown
    assert "16 images" not in text and "17 images" in text  # the broken file counts too
    assert "broken.png" in text and "not a readable image" in text
    assert "data:image/png;base64," in text.split("Defect probability")[1]  # histogram
    assert "checkpoint_sha256" in text


def test_reading_results_back_needs_no_torch(tmp_path: Path) -> None:
    """Reading results back (page, table, masks, info), showing decisions and listing
    engines never run a model: they skip torch's import."""
    generate(tmp_path / "data", 4, (64, 64), defect_rate=0.5, seed=3)
    results = tmp_path / "results.parquet"
    fast = ["-q", "--decoder", "pil", "--device", "cpu"]
    run = CliRunner().invoke(
        main, ["run", str(tmp_path / "data" / "images"), "-o", str(results), *fast]
    )
    assert run.exit_code == 0, run.output
    page, table = tmp_path / "r.html", tmp_path / "r.csv"
    (tmp_path / "engines" / "broken").mkdir(parents=True)
    (tmp_path / "engines" / "broken" / "manifest.json").write_text("{")
    Decisions(0.75, Rule("both", 9)).write(tmp_path / "decisions.json")
    for arguments, shown in [
        (["report", str(results), "-o", str(page), "--csv", str(table)], "wrote"),  # --html
        (["report", str(results), "--mask-images", str(tmp_path / "masks")], "wrote"),
        (["info", str(results)], "psicbatch results"),
        (["engines", str(tmp_path / "engines")], "unreadable"),
        (["info", str(tmp_path / "decisions.json")], "name=both, min_area=9"),
    ]:
        exits, printed = exits_in_a_fresh_process(arguments)
        assert exits == ["0 False"], printed
        assert shown in printed
    assert page.is_file() and table.is_file()


def test_a_report_of_a_folder_that_holds_no_results_is_one_line(tmp_path: Path) -> None:
    plain, watch = tmp_path / "plain", tmp_path / "watch"
    plain.mkdir()
    watch.mkdir()
    (watch / "_watch.json").write_text("{}")
    for folder, expected in (
        (plain, "not a results file, nor a folder of psicbatch run --watch"),
        (watch, "no results yet (no part-*.parquet)"),
    ):
        html = tmp_path / "r.html"
        result = CliRunner().invoke(main, ["report", str(folder), "--html", str(html)])
        assert result.exit_code == 1 and expected in result.output
        assert len(result.output.strip().splitlines()) == 1 and not html.exists()
    inside = CliRunner().invoke(main, ["report", str(watch), "--html", str(watch / "r.html")])
    assert inside.exit_code == 1 and "is inside the results folder" in inside.output


def test_report_csv_is_a_table_a_spreadsheet_opens_safely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--csv alone writes only the table: one row per image, boxes split into columns, no
    masks; a file name a spreadsheet would read as a formula is quoted as text."""
    generate(tmp_path / "data", 6, (64, 80), defect_rate=0.5, seed=3)
    folder = tmp_path / "data" / "images"
    for name in ("=1+2.png", "-b.png"):
        shutil.copy(next(folder.glob("*.png")), folder / name)
    (folder / "broken.png").write_text("not an image")
    monkeypatch.chdir(folder)  # paths as given: "=1+2.png" begins its cell
    results = tmp_path / "r.parquet"
    runner = CliRunner()
    fast = ["-q", "--decoder", "pil", "--device", "cpu", "--masks", "all", "--allow-errors"]
    names = sorted(path.name for path in folder.iterdir())
    run = runner.invoke(main, ["run", "--out", str(results), *fast, "--", *names])
    assert run.exit_code == 0, run.output
    table = tmp_path / "r.csv"
    result = runner.invoke(main, ["report", str(results), "--csv", str(table)])
    assert result.exit_code == 0, result.output
    assert "r.csv: 9 rows" in result.output and "report.html" not in result.output
    with open(table, newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    rows = pq.read_table(results).to_pylist()
    assert [row["path"].removeprefix("'") for row in written] == [row["path"] for row in rows]
    quoted = {row["path"] for row in written if row["path"].startswith("'")}
    assert quoted == {"'=1+2.png", "'-b.png"}
    assert "mask" not in written[0] and "path_bytes" not in written[0]
    for row, stored in zip(written, rows, strict=True):
        if stored["error"] is not None:
            assert row["error"] == stored["error"] and row["probability"] == ""
            continue
        assert float(row["probability"]) == pytest.approx(stored["probability"], rel=1e-6)
        assert row["is_defect"] == str(stored["is_defect"]).lower()
        assert int(row["mask_area"]) == stored["mask_area"]
        box = stored["mask_bbox"] or {}
        assert [row[f"mask_bbox_{k}"] for k in "xywh"] == [str(box.get(k, "")) for k in "xywh"]
    assert any(row["mask_bbox_x"] for row in written)  # some masks, so boxes were compared
    shown = runner.invoke(main, ["info", str(results), "--json"])
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.output)
    defective = sum(bool(row["is_defect"]) for row in rows)
    assert (summary["images"], summary["defective"], summary["errors"]) == (9, defective, 1)
    # auto: what this CPU runs best, with how it computes conv10 here where that is by FFT
    engine = f"torch {cpu_auto().precision}"
    method = large_kernel_method(torch.device("cpu"), cpu_auto().precision)
    by_fft = ", large kernels in the frequency domain" if method == FREQUENCY_DOMAIN else ""
    assert summary["engine"] == engine + by_fft
    # An earlier table is replaced only with --overwrite; another CSV file never.
    assert runner.invoke(main, ["report", str(results), "--csv", str(table)]).exit_code == 1
    again = ["report", str(results), "--csv", str(table), "--overwrite"]
    assert runner.invoke(main, again).exit_code == 0
    mine = tmp_path / "mine.csv"
    mine.write_text("part,result\n")
    result = runner.invoke(main, ["report", str(results), "--csv", str(mine), "--overwrite"])
    assert result.exit_code == 1 and "not a psicbatch CSV table" in result.output
    assert mine.read_text() == "part,result\n"


def test_a_watch_folder_with_parts_of_an_older_schema_reads_as_one_table(tmp_path: Path) -> None:
    """A watch that ran across an upgrade holds parts without the newer columns: they read
    as nulls there, for the page and the CSV table alike."""
    (tmp_path / "_watch.json").write_text("{}")
    hour = tmp_path / "date=2026-12-04" / "hour=07"
    hour.mkdir(parents=True)
    old = pa.table({"path": ["a.png"], "probability": pa.array([0.2], pa.float32())})
    new = old.append_column("tile", pa.array([{"x": 0, "y": 0, "w": 8, "h": 8}]))
    pq.write_table(old, hour / "part-00000.parquet")
    pq.write_table(new, hour / "part-00001.parquet")
    table, description = read_results_table(tmp_path)
    assert table.column("tile").to_pylist() == [None, {"x": 0, "y": 0, "w": 8, "h": 8}]
    assert description["parts"] == 2
    assert spreadsheet_table(table).column_names == [
        "path", "probability", "tile_x", "tile_y", "tile_w", "tile_h"
    ]  # fmt: skip


def test_a_page_names_its_first_errors_and_counts_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A camera that writes thousands of broken files does not make a page of thousands
    of lines: the first ERRORS_LISTED are named, the rest counted."""
    generate(tmp_path / "data", 2, (48, 48), defect_rate=0.5, seed=1)
    folder = tmp_path / "data" / "images"
    for i in range(5):
        (folder / f"broken_{i}.png").write_text("not an image")
    results = tmp_path / "r.parquet"
    fast = ["-q", "--decoder", "pil", "--device", "cpu", "--allow-errors"]
    assert (
        CliRunner().invoke(main, ["run", str(folder), "--out", str(results), *fast]).exit_code == 0
    )
    monkeypatch.setattr(html_report, "ERRORS_LISTED", 2)
    page, counts = html_report.build_report(results)
    assert counts.endswith("5 errors") and "<h2>Errors (5)</h2>" in page
    assert page.count("not a readable image") == 2 and "and 3 more" in page


def test_a_page_and_info_say_how_the_run_judged_its_images(tmp_path: Path) -> None:
    from psicbatch.run.results import judged_by

    generate(tmp_path / "data", 4, (64, 64), defect_rate=0.5, seed=3)
    decisions, results = tmp_path / "d.json", tmp_path / "results.parquet"
    Decisions(0.75, Rule("both", 9), {"max_escape_rate": 0.0}).write(decisions)
    args = ["run", str(tmp_path / "data" / "images"), "-o", str(results), "--decisions"]
    run = CliRunner().invoke(main, [*args, str(decisions), "-q", "--decoder", "pil"])
    assert run.exit_code == 0, run.output
    said = (
        "probability &gt;= 0.75 and at least 9 defect pixels (rule both), from the decision "
        f"file {decisions}"
    )
    page, _ = html_report.build_report(results, top=3)
    assert f"Judged defective: {said}." in page
    # The borderline images, nearest the threshold first, judged either way.
    rows = pq.read_table(results).to_pylist()
    nearest = sorted(rows, key=lambda row: abs(row["probability"] - 0.75))[:3]
    borderline = page.split("Nearest the threshold (3)")[1]
    places = [borderline.index(row["path"]) for row in nearest]
    assert places == sorted(places)
    assert borderline.count("(judged good)") == sum(not row["is_defect"] for row in nearest)
    shown = CliRunner().invoke(main, ["info", str(results), "--json"])
    assert json.loads(shown.output)["judged defective"] == said.replace("&gt;", ">")
    # Without decisions: the model's threshold, or one given alone.
    engine = {"thresholds": {"classification": 0.5, "segmentation": 0.5}}
    model = judged_by({"engine": engine, "thresholds": {"classification": 0.5}})
    given = judged_by({"engine": engine, "thresholds": {"classification": 0.25}})
    assert model is not None and model.line() == "probability >= 0.5, from the model's threshold"
    assert given is not None and given.line() == "probability >= 0.25, from the threshold given"
    stored = {"engine": "engines/e", "manifest_revision": 3}
    record = {"engine": engine, "thresholds": {"classification": 0.5}, "decisions": stored}
    by_engine = judged_by(record)
    assert by_engine is not None and by_engine.source.endswith("engines/e (manifest revision 3)")
    assert judged_by({}) is None  # nothing recorded: nothing said
