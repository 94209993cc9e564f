"""Parts decided as a watch inspects their images (``run --watch --group-by``): rejected at
the first defect, decided on their last image, incomplete when their images stop coming;
each decided once, across restarts."""

from __future__ import annotations

import csv
import datetime
import json
import os
import shutil
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.errors import PsicbatchError
from psicbatch.run.job import LATE_IMAGES_FILE, PART_DECISIONS_FILE
from psicbatch.run.part_table import PartGrouping
from psicbatch.run.watch_parts import LATE_ROWS, PartDecisions, WatchParts
from tests.test_watch import start_watch, wait_for

START = datetime.datetime(2026, 12, 6, 8, 0, tzinfo=datetime.timezone.utc)
CAMERA = r"(p\d+)_cam"


class Clock:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> datetime.datetime:
        return START + datetime.timedelta(seconds=self.seconds)


def row(name: str, judged: bool = False, error: str | None = None, at: float = 0.0) -> dict:
    return {
        "path": f"/line/{name}.png",
        "path_bytes": f"/line/{name}.png".encode(),
        "is_defect": judged,
        "error": error,
        "probability": None if error else (0.9 if judged else 0.1),
        "completed_at": START + datetime.timedelta(seconds=at),
    }


def decided(out: Path, name: str = PART_DECISIONS_FILE) -> list[dict]:
    with (out / name).open(newline="") as file:
        return list(csv.DictReader(file))


def decisions(
    out: Path, images: int | None = 3, timeout: float = 10
) -> tuple[PartDecisions, Clock]:
    clock = Clock()
    out.mkdir(exist_ok=True)  # a watch's folder, claimed by then
    return PartDecisions(out, WatchParts(PartGrouping(CAMERA, images), timeout), clock), clock


def test_a_part_is_rejected_at_its_first_defect_and_decided_on_its_last_image(
    tmp_path: Path,
) -> None:
    parts, _ = decisions(tmp_path)
    parts.add([row("p1_cam1"), row("p2_cam1"), row("p3_cam1")])
    assert decided(tmp_path) == []  # each waits for its other images
    parts.add([row("p1_cam2", judged=True)])  # a defect: rejected without its third image
    parts.add([row("p2_cam2"), row("p2_cam3")])  # all three good: passed
    parts.add([row("p3_cam2", error="damaged file"), row("p3_cam3")])  # one not inspected
    parts.add([row("p1_cam3", judged=True)])  # a part already decided decides nothing more
    lines = decided(tmp_path)
    assert [(line["part"], line["decision"]) for line in lines] == [
        ("p1", "reject"),
        ("p2", "pass"),
        ("p3", "unknown"),
    ]
    p1, p2, p3 = lines
    assert (p1["images"], p1["judged_defective"], p1["errors"]) == ("2", "1", "0")
    assert p1["defective_images"] == "/line/p1_cam2.png" and p1["largest_probability"] == "0.9"
    assert (p2["images"], p2["judged_defective"], p2["defective_images"]) == ("3", "0", "")
    assert (p3["errors"], p3["largest_probability"]) == ("1", "0.1")
    assert parts.counts == {"reject": 1, "pass": 1, "unknown": 1}


def test_a_part_whose_images_stop_coming_is_decided_on_those_it_has(tmp_path: Path) -> None:
    sized, clock = decisions(tmp_path / "sized", images=3, timeout=10)
    sized.add([row("p1_cam1", at=0), row("p1_cam2", at=4)])
    clock.seconds = 13.9  # 9.9 s after its last image: it still waits
    sized.expire()
    assert decided(tmp_path / "sized") == []
    clock.seconds = 14
    sized.expire()
    (line,) = decided(tmp_path / "sized")
    assert (line["part"], line["decision"], line["images"]) == ("p1", "incomplete", "2")
    assert line["decided_at"].startswith("2026-12-06T08:00:14")
    unsized, clock = decisions(tmp_path / "unsized", images=None, timeout=10)
    unsized.add([row("p1_cam1"), row("odd"), row("p2_cam1", error="truncated")])
    clock.seconds = 10  # no size: decided on what came, once nothing more does
    unsized.expire()
    assert {(line["part"], line["decision"]) for line in decided(tmp_path / "unsized")} == {
        ("p1", "pass"),
        ("/line/odd.png", "pass"),  # a path the pattern does not match: a part of its own
        ("p2", "unknown"),
    }


def test_an_image_after_its_parts_decision_is_noted_unless_the_part_was_rejected(
    tmp_path: Path,
) -> None:
    parts, clock = decisions(tmp_path, images=2, timeout=10)
    parts.add([row("p1_cam1", judged=True), row("p2_cam1"), row("p2_cam2")])
    parts.add([row("p3_cam1", error="truncated"), row("p3_cam2"), row("p4_cam1"), row("p5_cam1")])
    _written(tmp_path, [row("p5_cam1")])  # read again at the restart below
    clock.seconds = 10
    parts.expire()  # p4, p5: incomplete
    assert decided(tmp_path, LATE_IMAGES_FILE) == []
    clock.seconds = 11
    parts.add([row("p1_cam2", judged=True), row("p2_cam3", judged=True), row("p4_cam2")])
    parts.add([row("p3_cam1", error="still truncated")])  # the same file, inspected again
    late = decided(tmp_path, LATE_IMAGES_FILE)
    assert [(line["part"], line["decision"], line["now"], line["path"]) for line in late] == [
        ("p2", "pass", "reject", "/line/p2_cam3.png"),  # p1's second: rejected, not noted
        ("p4", "incomplete", "pass", "/line/p4_cam2.png"),  # its second image, good
        ("p3", "unknown", "unknown", "/line/p3_cam1.png"),
    ]
    passed, incomplete, unknown = late
    assert (passed["is_defect"], passed["probability"], passed["error"]) == ("true", "0.9", "")
    assert (incomplete["is_defect"], incomplete["probability"]) == ("false", "0.1")
    assert (unknown["is_defect"], unknown["error"], unknown["probability"]) == (
        "",
        "still truncated",
        "",
    )
    assert passed["noted_at"].startswith("2026-12-06T08:00:11")
    assert (parts.late.images, parts.late.judged_defective, parts.late.changed) == (
        3,
        1,
        {"p2", "p4"},
    )
    assert [line["part"] for line in decided(tmp_path)] == ["p1", "p2", "p3", "p4", "p5"]
    with (tmp_path / LATE_IMAGES_FILE).open("a") as file:
        file.write("2026-12-06T08:00:12.000+00:00,p2,pa")  # a line a kill cut short
    restarted, _ = decisions(tmp_path, images=2, timeout=10)  # decisions kept by kind
    restarted.add([row("p1_cam3", judged=True), row("p2_cam4"), row("p5_cam2")])
    after = [(line["path"], line["now"]) for line in decided(tmp_path, LATE_IMAGES_FILE)]
    assert after[3:] == [
        ("/line/p2_cam4.png", "reject"),  # good, but an earlier late image was defective
        ("/line/p5_cam2.png", "pass"),  # its first image read again from the rows
    ]
    assert len(after) == 5 and (restarted.late.images, restarted.late.judged_defective) == (2, 0)


def test_only_the_latest_incomplete_parts_keep_their_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("psicbatch.run.watch_parts.INCOMPLETE_KEPT", 1)
    parts, clock = decisions(tmp_path, images=2, timeout=10)
    parts.add([row("p1_cam1")])
    clock.seconds = 5
    parts.add([row("p2_cam1")])
    clock.seconds = 15
    parts.expire()  # both incomplete; p1's images no longer kept
    parts.add([row("p1_cam2"), row("p2_cam2"), row("p1_cam3", judged=True)])
    now = [(line["path"], line["now"]) for line in decided(tmp_path, LATE_IMAGES_FILE)]
    assert now == [
        ("/line/p1_cam2.png", "incomplete"),  # not known to be complete: said as it was
        ("/line/p2_cam2.png", "pass"),
        ("/line/p1_cam3.png", "reject"),  # a defect rejects it all the same
    ]


def _written(out: Path, rows: list[dict], hour: int = 8, late: dict | None = None) -> None:
    """Rows as a watch writes them, in a part of its folder (with the record of its late
    images, ``PartDecisions.late_metadata``, where given)."""
    hour = out / "date=2026-12-06" / f"hour={hour:02d}"
    hour.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows).replace_schema_metadata(late or None)
    pq.write_table(table, hour / f"part-{len(list(hour.iterdir()))}.parquet")


def test_a_late_images_line_a_kill_kept_from_being_made_is_made_at_the_restart(
    tmp_path: Path,
) -> None:
    parts, clock = decisions(tmp_path, images=2, timeout=10)
    first = [row("p1_cam1"), row("p1_cam2"), row("p2_cam1", judged=True), row("p4_cam1")]
    _written(tmp_path, first, late=parts.late_metadata(parts.parts_of(first)))
    parts.add(first)  # p1 passed, p2 rejected
    clock.seconds = 3
    earlier = [row("p1_cam3", at=3)]  # late, and noted
    _written(tmp_path, earlier, late=parts.late_metadata(parts.parts_of(earlier)))
    parts.add(earlier)
    clock.seconds = 5
    batch = [row(name, judged=name == "p1_cam4", at=5)
             for name in ("p1_cam3", "p2_cam2", "p1_cam4", "p3_cam1")]  # fmt: skip
    late = parts.late_metadata(parts.parts_of(batch))
    assert json.loads(late[LATE_ROWS]) == {"rows": [0, 2], "after": 1}  # p2 rejected; p3 waits
    _written(tmp_path, batch, late=late)
    # Killed here: the rows written, not their late images' lines (nor p4's second image).
    clock.seconds = 6
    restarted = PartDecisions(tmp_path, parts.parts, clock)
    lines = [(line["path"], line["decision"], line["now"], line["is_defect"])
             for line in decided(tmp_path, LATE_IMAGES_FILE)]  # fmt: skip
    assert lines == [
        ("/line/p1_cam3.png", "pass", "pass", "false"),  # noted before the kill
        ("/line/p1_cam3.png", "pass", "pass", "false"),  # the same file again: made now
        ("/line/p1_cam4.png", "pass", "reject", "true"),
    ]
    assert (restarted.late.images, restarted.late.judged_defective) == (2, 1)
    assert restarted.late.changed == {"p1"}
    again = PartDecisions(tmp_path, parts.parts, clock)  # made once: not again
    assert len(decided(tmp_path, LATE_IMAGES_FILE)) == 3 and again.late.images == 0
    # A write of the lines cut short: the lines after the whole ones are made.
    text = (tmp_path / LATE_IMAGES_FILE).read_text().splitlines(keepends=True)
    (tmp_path / LATE_IMAGES_FILE).write_text("".join(text[:3]) + text[3][:20])
    cut = PartDecisions(tmp_path, parts.parts, clock)
    assert [line["path"] for line in decided(tmp_path, LATE_IMAGES_FILE)][1:] == [
        "/line/p1_cam3.png",
        "/line/p1_cam4.png",
    ]
    assert (cut.late.images, cut.late.judged_defective) == (1, 1)
    clock.seconds = 20
    cut.add([row("p1_cam5", at=20)])  # p1 known to hold a defect since
    assert decided(tmp_path, LATE_IMAGES_FILE)[-1]["now"] == "reject"


def test_a_restart_decides_each_part_once(tmp_path: Path) -> None:
    parts, _ = decisions(tmp_path)
    first = [row("p1_cam1", judged=True), row("p2_cam1"), row("p2_cam2")]
    _written(tmp_path, first)
    parts.add(first)  # p1 decided; p2 waits
    # Killed after writing these rows, before their decision's line:
    _written(tmp_path, [row("p2_cam3"), row("p3_cam1", judged=True)])
    with (tmp_path / PART_DECISIONS_FILE).open("a") as file:
        file.write("2026-12-06T08:00:01.000+00:00,p9,rej")  # and a line cut short
    restarted, _ = decisions(tmp_path)
    assert [(line["part"], line["decision"]) for line in decided(tmp_path)] == [
        ("p1", "reject"),  # not again
        ("p2", "pass"),  # decided at the restart, from the rows written before the kill
        ("p3", "reject"),
    ]
    assert restarted.counts == {"pass": 1, "reject": 1}
    restarted.add([row("p1_cam2"), row("p4_cam1", judged=True)])
    assert [line["part"] for line in decided(tmp_path)] == ["p1", "p2", "p3", "p4"]


def test_info_and_the_page_count_a_watchs_decisions_of_the_folder_shown(tmp_path: Path) -> None:
    from psicbatch.run.results import results_summary

    (tmp_path / "_watch.json").write_text('{"sources": ["/line"]}')
    parts, clock = decisions(tmp_path)
    for hour, rows in ((8, [row("p1_cam1", judged=True)]), (9, [row("p2_cam1"), row("p3_cam1")])):
        clock.seconds = 3600 * (hour - 8)
        written = [r | {"completed_at": clock()} for r in rows]
        _written(tmp_path, written, hour)
        parts.add(written)
    clock.seconds = 3600 + 10
    parts.expire()  # p2 and p3 incomplete, decided at 09:00:10
    clock.seconds = 3600 + 20
    late = [row("p2_cam2", judged=True) | {"completed_at": clock()}]
    _written(tmp_path, late, 9)
    parts.add(late)  # noted at 09:00:20
    day = tmp_path / "date=2026-12-06"
    said = {
        folder: (
            results_summary(folder)["part decisions"],
            results_summary(folder).get("late images"),
        )
        for folder in (tmp_path, day, day / "hour=08", day / "hour=09")
    }
    late = "1 late image (1 judged defective), 1 part now decided otherwise (_late.csv)"
    assert said == {
        tmp_path: ("1 rejected, 2 incomplete (_parts.csv)", late),
        day: ("1 rejected, 2 incomplete (_parts.csv)", late),
        day / "hour=08": ("1 rejected (_parts.csv)", None),
        day / "hour=09": ("2 incomplete (_parts.csv)", late),
    }


def test_info_counts_a_watchs_images_reading_only_the_columns_it_counts(tmp_path: Path) -> None:
    """A month of a watch's masks would take gigabytes; counting its images needs three
    columns, and a results file or watch folder gives only those asked for that it has."""
    from psicbatch.run.results import COUNTED_COLUMNS, read_results_table, results_summary

    (tmp_path / "_watch.json").write_text('{"sources": ["/line"]}')
    rows = [row("p1_cam1", judged=True), row("p2_cam1"), row("p3_cam1", error="truncated")]
    _written(tmp_path, [r | {"mask": "not read"} for r in rows])
    _written(tmp_path, [row("p4_cam1", at=5) | {"mask": "not read"}], hour=9)
    table, _ = read_results_table(tmp_path, [*COUNTED_COLUMNS, "absent"])
    assert table.column_names == COUNTED_COLUMNS and table.num_rows == 4
    summary = results_summary(tmp_path)
    assert (summary["images"], summary["defective"], summary["errors"]) == (4, 1, 1)
    assert summary["completed"] == "2026-12-06 08:00:00 to 2026-12-06 08:00:05 UTC"
    from psicbatch.run.output import METADATA_KEY

    single = tmp_path / "results.parquet"
    pq.write_table(pa.Table.from_pylist(rows).replace_schema_metadata({METADATA_KEY: "{}"}), single)
    assert read_results_table(single, ["error", "mask"])[0].column_names == ["error"]


def test_a_damaged_part_of_the_rows_is_named_at_a_restart(tmp_path: Path) -> None:
    from psicbatch.run.watch import done_versions

    hour = tmp_path / "date=2026-12-06" / "hour=08"
    hour.mkdir(parents=True)
    (hour / "part-1.parquet").write_bytes(b"damaged")
    for start in (lambda: done_versions(tmp_path), lambda: decisions(tmp_path)):
        with pytest.raises(PsicbatchError) as error:
            start()
        said = str(error.value)
        assert said.startswith(f"{hour / 'part-1.parquet'}: a part of the watch's results cannot")
        ending = "move it out of the folder to go on without it (its files are inspected again)"
        assert said.endswith(ending)


def test_a_restart_that_makes_parts_otherwise_is_refused(tmp_path: Path) -> None:
    decisions(tmp_path, images=3)
    with pytest.raises(PsicbatchError) as error:
        decisions(tmp_path, images=2)
    assert str(error.value) == (
        f"{tmp_path}: its parts were decided with --group-by '{CAMERA}' --part-images 3 "
        f"--part-timeout 10; give the same, or another --out (now: --group-by '{CAMERA}' "
        "--part-images 2 --part-timeout 10)"
    )
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / PART_DECISIONS_FILE).touch()  # a kill before its header: begun again
    decisions(tmp_path / "cut")
    assert (tmp_path / "cut" / PART_DECISIONS_FILE).read_text().startswith("decided_at,part,")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / PART_DECISIONS_FILE).write_text("part,note\nx,y\n")
    with pytest.raises(
        PsicbatchError, match=r"_parts\.csv: not a file of a watch.s parts psicbatch writes"
    ):
        decisions(tmp_path / "other")


def test_a_watchs_parts_are_counted_as_it_made_them_unless_told_otherwise(tmp_path: Path) -> None:
    from psicbatch.run.watch_parts import parts_pattern

    (tmp_path / "_watch.json").write_text("{}")
    day = tmp_path / "date=2026-12-06"
    day.mkdir()
    assert parts_pattern(day, None) is None  # a watch that decides no parts
    decisions(tmp_path)
    assert parts_pattern(tmp_path, None) == parts_pattern(day, None) == CAMERA
    assert parts_pattern(day, "(p1)") == "(p1)"
    (tmp_path / "results.parquet").touch()
    assert parts_pattern(tmp_path / "results.parquet", None) is None


def test_part_options_need_a_watch_and_each_other(tmp_path: Path) -> None:
    runner = CliRunner()
    alone = runner.invoke(main, ["run", str(tmp_path), "--group-by", CAMERA])
    assert alone.exit_code == 2 and "by report RESULTS --parts-csv" in alone.output
    sized = runner.invoke(main, ["run", "--watch", str(tmp_path), "--part-images", "3"])
    assert sized.exit_code == 2 and "--part-images needs --group-by" in sized.output
    waiting = runner.invoke(main, ["run", "--watch", str(tmp_path), "--part-timeout", "5"])
    assert waiting.exit_code == 2 and "--part-timeout needs --group-by" in waiting.output
    broken = runner.invoke(main, ["run", "--watch", str(tmp_path), "--group-by", "(p"])
    assert broken.exit_code == 1 and "--group-by '(p': not a regular expression" in broken.output


def _what_reports_say_of_the_watch(tmp_path: Path, folder: Path, out: Path) -> None:
    """``info``, the page, the parts table and an audit of the watch's folder: the parts
    as the watch made them, and the image that came after its part's decision."""
    shown = json.loads(CliRunner().invoke(main, ["info", str(out), "--json"]).output)
    assert shown["part decisions"] == "1 passed, 1 incomplete (_parts.csv)"
    late = "1 late image (0 judged defective), 1 part now decided otherwise (_late.csv)"
    assert shown["late images"] == late
    page = tmp_path / "page.html"
    reported = CliRunner().invoke(main, ["report", str(out), "--html", str(page)])
    assert reported.exit_code == 0, reported.output
    assert "1 late image (0 judged defective), 1 part now" in " ".join(reported.output.split())
    assert "Images after their part's decision (1)" in page.read_text()
    assert f"<td>p2</td><td>incomplete</td><td>pass</td><td><code>{folder / 'p2_cam2.png'}" in (
        page.read_text()
    )
    table = tmp_path / "parts.csv"  # made afterwards, as the watch made its parts
    made = CliRunner().invoke(main, ["report", str(out), "--parts-csv", str(table)])
    assert made.exit_code == 0, made.output
    with table.open(newline="") as file:
        afterwards = {row["part"]: row["decision"] for row in csv.DictReader(file)}
    assert afterwards == {"p1": "pass", "p2": "pass"}  # on all its images, the late one too
    rows = tmp_path / "rows.csv"  # each image with its part, as the watch made its parts
    assert CliRunner().invoke(main, ["report", str(out), "--csv", str(rows)]).exit_code == 0
    with rows.open(newline="") as file:
        parts_of = sorted((row["part"], row["part_decision"]) for row in csv.DictReader(file))
    assert parts_of == [("p1", "pass")] * 2 + [("p2", "pass")] * 2
    labels = tmp_path / "reviewed"  # the review: every image good
    (labels / "images").mkdir(parents=True)
    for image in folder.glob("*.png"):
        shutil.copy(image, labels / "images" / image.name)
    audit = tmp_path / "audit"
    audited = CliRunner().invoke(
        main, ["eval", str(out), "--labels", str(labels), "-o", str(audit)]
    )
    assert audited.exit_code == 0, audited.output
    parts = json.loads((audit / "metrics.json").read_text())["parts"]
    assert (parts["parts"], parts["grouping"]) == (2, f"--group-by {CAMERA}")  # as the watch


def test_a_watch_decides_parts_as_their_images_come(tmp_path: Path) -> None:
    images = generate(tmp_path / "made", 3, (64, 64), seed=3)
    folder, out = tmp_path / "line", tmp_path / "results"
    folder.mkdir()
    options = ["--settle", "0.3", "--threshold", "1", "--group-by", CAMERA, "--part-images", "2"]
    watch = start_watch(folder, out, *options, "--part-timeout", "1")
    for name, image in zip(("p1_cam1", "p1_cam2", "p2_cam1"), images, strict=True):
        (folder / f"{name}.png").write_bytes(image.read_bytes())
    wait_for(
        lambda: len(decided(out)) == 2 if (out / PART_DECISIONS_FILE).exists() else False, watch
    )
    assert {(line["part"], line["decision"]) for line in decided(out)} == {
        ("p1", "pass"),  # both images judged good (threshold 1)
        ("p2", "incomplete"),  # its second image had not come
    }
    (folder / "p2_cam2.png").write_bytes((folder / "p1_cam1.png").read_bytes())  # it comes
    wait_for(lambda: len(decided(out, LATE_IMAGES_FILE)) == 1, watch)
    os.killpg(watch.pid, signal.SIGTERM)
    _, stderr = watch.communicate(timeout=30)
    said = " ".join(stderr.split())
    assert (
        "parts: 1 passed, 1 incomplete; 1 late image (0 judged defective), 1 part now decided "
        "otherwise, in _late.csv" in said
    )
    _what_reports_say_of_the_watch(tmp_path, folder, out)
    # Killed between the late image's row and its line: the line is made at the restart.
    late_file = out / LATE_IMAGES_FILE
    (noted,) = decided(out, LATE_IMAGES_FILE)
    late_file.write_text(late_file.read_text().splitlines(keepends=True)[0])  # its header
    restarted = start_watch(folder, out, *options, "--part-timeout", "1")
    wait_for(lambda: len(decided(out, LATE_IMAGES_FILE)) == 1, restarted)
    os.killpg(restarted.pid, signal.SIGTERM)
    restarted.communicate(timeout=30)
    (made,) = decided(out, LATE_IMAGES_FILE)
    assert made.pop("noted_at") >= noted.pop("noted_at") and made == noted
    again = start_watch(folder, out, *options[:-1], "3", "--part-timeout", "1")
    _, stderr = again.communicate(timeout=60)
    assert again.returncode == 1 and "its parts were decided with" in stderr
    assert len(decided(out)) == 2  # the refused start decided nothing
    record = out / "_watch_run.json"
    started = record.stat().st_mtime_ns
    plain = start_watch(folder, out, *options[:4])  # no --group-by: it says what it leaves
    wait_for(lambda: record.stat().st_mtime_ns != started, plain)
    os.killpg(plain.pid, signal.SIGTERM)
    _, stderr = plain.communicate(timeout=30)
    assert "holds part decisions (_parts.json); this watch, without --group-by, decides none" in (
        " ".join(stderr.split())
    )
    # A folder it cannot write into (as on a full disk): one line, not a traceback.
    for day in out.glob("date=*"):
        day.rename(tmp_path / day.name)  # its rows gone: the images are inspected again
    today = datetime.datetime.now(datetime.timezone.utc)
    for stamp in (today, today + datetime.timedelta(days=1)):
        (out / f"date={stamp:%Y-%m-%d}").write_text("not a folder")
    blocked = start_watch(folder, out, *options[:4])
    _, stderr = blocked.communicate(timeout=60)
    assert blocked.returncode == 1 and "Traceback" not in stderr, stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith(f"Error: {out}: cannot write the watch's results (")
    )


def test_a_watch_names_parts_as_the_parts_table_does_even_by_an_empty_group(
    tmp_path: Path,
) -> None:
    from psicbatch.run.part_table import part_names

    out = tmp_path / "out"
    out.mkdir()
    pattern = r"(z*)_cam"  # its group matches, empty, before "_cam"
    parts = PartDecisions(out, WatchParts(PartGrouping(pattern, 1), 10), Clock())
    parts.add([row("p1_cam1")])
    (line,) = decided(out)
    assert line["part"] == part_names(["/line/p1_cam1.png"], pattern)[0] == ""


def test_a_cell_is_made_safe_alike_in_the_part_files_and_the_tables() -> None:
    """The part files' cells (one at a time) and report's tables (Arrow columns) quote the
    same formula starts."""
    import pyarrow.compute as pc

    from psicbatch.run.spreadsheet import FORMULA_START, formula_safe

    texts = [f"{first}x" for first in "=+-@\t\r'a "] + ["", "a=b"]
    column = pc.replace_substring_regex(pa.array(texts), pattern=FORMULA_START, replacement=r"'\1")
    assert [formula_safe(text) for text in texts] == column.to_pylist()
    assert sum(text != formula_safe(text) for text in texts) == 6
