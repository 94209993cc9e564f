from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from psicbatch.cli import main
from psicbatch.data.synth import generate


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
    counts = re.search(r"wrote .*report.html: 17 images, (\d+) defective, 1 errors", result.output)
    assert counts is not None, result.output
    text = page.read_text()
    listed = re.search(r"Most likely defects \((\d+) of (\d+)\)", text)
    assert listed is not None
    shown, found = int(listed.group(1)), int(listed.group(2))
    assert found > 0 and shown == min(5, found)
    assert int(counts.group(1)) == found
    assert (
        len(re.findall(r'<figure class="defect"><img src="data:image/png;base64,', text)) == shown
    )
    assert "16 images" not in text and "17 images" in text  # the broken file counts too
    assert "broken.png" in text and "not a readable image" in text
    assert "data:image/png;base64," in text.split("Defect probability")[1]  # histogram
    assert "checkpoint_sha256" in text


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
