"""Decisions per part: a part is defective when any of its images is and rejected when any
of its images is judged defective; reports count escapes and false rejects in parts where
a part has several images (KolektorSDD's kosNN folders, or ``eval --group-by``)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from psicbatch import metrics
from psicbatch.assets import demo_model_path
from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.decisions import Rule, operating_points
from psicbatch.part_scores import part_scores
from psicbatch.reports import part_rates
from tests.test_layouts import KSDD_ORIGINAL

LAST_DIGIT = r"synth_000\d(\d)"  # synth_00003, synth_00013 and synth_00023: one part


def _row(part: str, defective: bool, judged: bool, probability: float) -> dict:
    return {
        "part": part,
        "is_defective": defective,
        "predicted_defective": judged,
        "probability": probability,
    }


def test_a_part_is_judged_by_all_its_images() -> None:
    rows = [
        _row("caught", True, True, 0.9),  # its defect found
        _row("caught", False, False, 0.1),
        _row("escaped", True, False, 0.4),  # no image of it judged defective
        _row("escaped", False, False, 0.2),
        _row("elsewhere", True, False, 0.3),  # rejected, but for its good image
        _row("elsewhere", False, True, 0.8),
        _row("rejected", False, False, 0.1),  # a good part, one image judged defective
        _row("rejected", False, True, 0.7),
        _row("passed", False, False, 0.05),
        _row("alone", False, False, 0.35),  # a part of one image among others
    ]
    parts = part_scores(rows)
    assert parts is not None
    assert (parts.parts, parts.largest, parts.defective, parts.good) == (6, 2, 3, 3)
    assert (parts.escapes, parts.false_rejects, parts.caught_elsewhere) == (1, 1, 1)
    largest = {"caught": 0.9, "escaped": 0.4, "elsewhere": 0.8}
    good = {"rejected": 0.7, "passed": 0.05, "alone": 0.35}
    labels = [True] * 3 + [False] * 3
    scores = [*largest.values(), *good.values()]
    assert parts.auc == pytest.approx(metrics.roc_auc(labels, scores))
    assert parts.ap == pytest.approx(metrics.average_precision(labels, scores))
    assert parts.auc == pytest.approx(8 / 9)  # 0.4 ranks below the good part's 0.7


def test_the_parts_sentence_counts_one_part_in_the_singular() -> None:
    parts = part_scores([_row("elsewhere", True, False, 0.3), _row("elsewhere", False, True, 0.8)])
    assert parts is not None
    _, (sentence,) = part_rates(SimpleNamespace(parts=parts))
    assert sentence.startswith("1 part of up to 2 images (the dataset's groups), 1 defective:")
    assert "1 of the defective parts rejected was rejected only for an image" in sentence


def test_parts_of_one_image_each_add_nothing() -> None:
    rows = [_row(f"p{i}", i % 2 == 0, i % 3 == 0, i / 10) for i in range(6)]
    assert part_scores(rows) is None
    older = [{key: value for key, value in row.items() if key != "part"} for row in rows]
    older[0]["part"] = older[1]["part"] = "p"  # rows before parts were recorded: not all
    assert part_scores(older) is None


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("parts")
    generate(data, 24, (64, 96), defect_rate=0.25, seed=5)
    return data


def _parts_of(predictions: Path) -> dict[str, int]:
    """The part counts, worked out from the per-image predictions by hand."""
    parts: dict[str, list[dict]] = {}
    for row in pq.read_table(predictions).to_pylist():
        parts.setdefault(row["part"], []).append(row)
    defective = {name for name, rows in parts.items() if any(r["is_defective"] for r in rows)}
    rejected = {name for name, rows in parts.items() if any(r["predicted_defective"] for r in rows)}
    return {
        "parts": len(parts),
        "defective": len(defective),
        "escapes": len(defective - rejected),
        "false_rejects": len(rejected - defective),
    }


def test_eval_counts_escapes_in_the_parts_a_pattern_makes(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    args = ["eval", str(demo_model_path()), str(dataset), "-o", str(out), "-q"]
    result = CliRunner().invoke(main, [*args, "--group-by", LAST_DIGIT, "--threshold", "0.3"])
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "metrics.json").read_text())["parts"]
    assert {key: recorded[key] for key in _parts_of(out / "predictions.parquet")} == _parts_of(
        out / "predictions.parquet"
    )
    assert recorded["parts"] == 10 and recorded["largest"] == 3
    assert 0 < recorded["defective"] < 10
    assert recorded["grouping"] == f"--group-by {LAST_DIGIT}"
    report = (out / "report.md").read_text()
    assert "| their parts (images of a part judged together) |" in report
    assert "parts score AUC " in report and "n/a%" not in report
    assert f"10 parts of up to 3 images (--group-by {LAST_DIGIT})" in report
    assert "their parts" in (out / "report.html").read_text()
    info = CliRunner().invoke(main, ["info", str(out)])
    assert f"10 of up to 3 images (--group-by {LAST_DIGIT})" in " ".join(info.output.split())

    alone = tmp_path / "alone"
    plain = CliRunner().invoke(main, [*args[:-3], "-o", str(alone), "-q"])
    assert plain.exit_code == 0, plain.output
    assert "parts" not in json.loads((alone / "metrics.json").read_text())
    assert "their parts" not in (alone / "report.md").read_text()


def test_kolektorsdd_folders_are_parts(tmp_path: Path) -> None:
    """Each kosNN folder holds the eight images of one commutator: its part."""
    if not KSDD_ORIGINAL.is_dir():
        pytest.skip("the KolektorSDD sample is not here")
    data = tmp_path / "ksdd"
    shutil.copytree(KSDD_ORIGINAL, data)
    out = tmp_path / "e"
    args = ["eval", str(demo_model_path()), str(data), "-o", str(out), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    parts = json.loads((out / "metrics.json").read_text())["parts"]
    assert (parts["parts"], parts["largest"]) == (2, 8)
    assert parts["grouping"] == "the dataset's groups"
    names = set(pq.read_table(out / "predictions.parquet")["part"].to_pylist())
    assert names == {"kos01", "kos21"}


def test_a_run_audited_in_parts_counts_as_its_evaluation(dataset: Path, tmp_path: Path) -> None:
    """The same decisions scored from a run's results and by inference give the same part
    counts."""
    results = tmp_path / "r.parquet"
    fp32 = ["--threshold", "0.3", "--precision", "fp32"]
    ran = CliRunner().invoke(
        main, ["run", str(dataset / "images"), "-o", str(results), "-q", *fp32]
    )
    assert ran.exit_code in (0, 3), ran.output
    audit, scored = tmp_path / "audit", tmp_path / "scored"
    common = ["--group-by", LAST_DIGIT, "-q"]
    audited = CliRunner().invoke(
        main, ["eval", str(results), "--labels", str(dataset), "-o", str(audit), *common]
    )
    assert audited.exit_code == 0, audited.output
    evaluated = CliRunner().invoke(
        main, ["eval", str(demo_model_path()), str(dataset), "-o", str(scored), *fp32, *common]
    )
    assert evaluated.exit_code == 0, evaluated.output
    first, second = (json.loads((d / "metrics.json").read_text())["parts"] for d in (audit, scored))
    assert first["parts"] == 10
    for key in ("parts", "largest", "defective", "escapes", "false_rejects", "grouping"):
        assert first[key] == second[key], key
    for key in ("auc", "ap"):
        assert math.isclose(first[key], second[key], abs_tol=1e-3), key


@pytest.mark.parametrize("rule", [Rule(), Rule("both", 30), Rule("either", 30)])
def test_each_threshold_counts_parts_as_their_images_decide(rule: Rule) -> None:
    """Against a count by hand at every threshold: a part is caught when any of its images
    is judged defective by the threshold and the rule (also by defect type)."""
    rng = np.random.default_rng(7)
    images = 60
    parts = [f"p{n}" for n in rng.integers(0, 18, images)]
    labels = rng.random(images) < 0.2
    probabilities = np.round(rng.random(images), 2)  # ties among images and parts
    areas = rng.integers(0, 60, images) * (rng.random(images) < 0.5)
    types = [
        str(kind) if label else ""
        for kind, label in zip(rng.choice(["crack", "dent"], images), labels, strict=True)
    ]
    points = operating_points(probabilities, labels, areas, rule, types, parts)
    names = sorted(set(parts))
    member = np.array([[part == name for part in parts] for name in names])
    defective = (member & labels).any(axis=1)
    assert points[0].defective == defective.sum() and points[0].unit == "parts"
    for point in points:
        judged = rule.defective(probabilities >= point.threshold, areas)
        rejected = (member & judged).any(axis=1)
        assert point.escapes == (defective & ~rejected).sum()
        assert point.false_rejects == (~defective & rejected).sum()
        for kind in point.by_type:  # a part of a type holds a defective image of it
            of_kind = (member & (np.array(types) == kind.defect_type)).any(axis=1)
            assert (kind.images, kind.escapes) == (of_kind.sum(), (of_kind & ~rejected).sum())
    thresholds = [point.threshold for point in points]
    assert thresholds == sorted(thresholds)


# Two defective parts (A caught by its good image, B by its defect) and two good ones.
PREDICTIONS = [
    ("A/defect", "A", True, 0.3),
    ("A/good", "A", False, 0.9),
    ("B/defect", "B", True, 0.8),
    ("B/good", "B", False, 0.1),
    ("C/one", "C", False, 0.5),
    ("C/two", "C", False, 0.2),
    ("D/one", "D", False, 0.4),
    ("D/two", "D", False, 0.05),
]


def _predictions(folder: Path, folds: dict[str, int] | None = None) -> Path:
    """Eval predictions as ``evaluate.image_row`` writes them, made by hand; cv's, with
    each part's fold, where ``folds`` are given."""
    rows = [
        {
            "id": name,
            "path": str(folder / f"{name}.png"),
            "part": part,
            "is_defective": defective,
            "probability": probability,
            "predicted_defective": probability >= 0.5,
            "predicted_defect_pixels": 0,
            **({"fold": folds[part]} if folds else {}),
        }
        for name, part, defective, probability in PREDICTIONS
    ]
    path = folder / "predictions.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_decisions_for_parts_reject_fewer_good_parts(tmp_path: Path) -> None:
    """No escaped image needs a threshold below 0.3, which rejects both good parts; no
    escaped part only needs each defective part caught by one image (A by its 0.9): a
    threshold between 0.5 and 0.8 rejects no good part, and lets A's defect image pass."""
    predictions = str(_predictions(tmp_path))
    images, parts = tmp_path / "images.json", tmp_path / "parts.json"
    by_image = CliRunner().invoke(main, ["calibrate", predictions, "-o", str(images)])
    by_part = CliRunner().invoke(main, ["calibrate", predictions, "--per-part", "-o", str(parts)])
    assert by_image.exit_code == 0, by_image.output
    assert by_part.exit_code == 0, by_part.output
    image_record, part_record = (json.loads(path.read_text()) for path in (images, parts))
    assert image_record["classification_threshold"] == pytest.approx(0.25)
    assert image_record["validation"]["false_rejects"] == 3  # 0.4, 0.5 and A's 0.9
    assert part_record["classification_threshold"] == pytest.approx(0.65)
    validation = part_record["validation"]
    assert validation["unit"] == "parts"
    counts = ("escapes", "defective", "false_rejects", "good")
    assert [validation[key] for key in counts] == [0, 2, 0, 2]
    assert part_record["target"] == {
        "max_escape_rate": 0.0,
        "parts": "as the predictions record them",
    }
    assert (
        "0 of 2 defective parts escape (95% upper bound 77.6%), 0 of 2 good parts rejected "
        "(0.00%); in images, 1 of 2 defective escape and 1 of 6 good are rejected" in by_part.output
    )
    report = parts.with_suffix(".md").read_text()
    assert "| parts | 0.65 | 0 of 2 |" in report and "| images | 0.65 | 1 of 2 |" in report
    assert "counted in parts (as the predictions record them)" in report


def test_parts_of_cv_predictions_are_named_as_cv_named_them(tmp_path: Path) -> None:
    """Also: a fold whose test parts are all of one kind has no point of its own (here
    both: fold 1 holds the defective parts, fold 2 the good ones)."""
    predictions = _predictions(tmp_path, {"A": 1, "B": 1, "C": 2, "D": 2})
    pooled = {"pooled": {"parts": {"grouping": "--group-by (part[0-9]+)"}}}
    (tmp_path / "cv.json").write_text(json.dumps(pooled))
    out = tmp_path / "parts.json"
    chosen = CliRunner().invoke(main, ["calibrate", str(predictions), "--per-part", "-o", str(out)])
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(out.read_text())["target"]["parts"] == "--group-by (part[0-9]+)"
    assert "Per fold" not in out.with_suffix(".md").read_text()
    with_good = _predictions(tmp_path, {"A": 1, "B": 2, "C": 1, "D": 2})
    again = CliRunner().invoke(
        main, ["calibrate", str(with_good), "--per-part", "-o", str(out), "--overwrite"]
    )
    assert again.exit_code == 0, again.output
    assert "| fold |" in out.with_suffix(".md").read_text()


def test_an_evaluation_holds_part_decisions_to_their_target_in_parts(
    dataset: Path, tmp_path: Path
) -> None:
    scored = tmp_path / "scored"
    args = ["eval", str(demo_model_path()), str(dataset), "-q", "--group-by", LAST_DIGIT]
    assert CliRunner().invoke(main, [*args, "-o", str(scored)]).exit_code == 0
    decisions = tmp_path / "parts.json"
    predictions = str(scored / "predictions.parquet")
    chosen = CliRunner().invoke(
        main, ["calibrate", predictions, "--per-part", "-o", str(decisions)]
    )
    assert chosen.exit_code == 0, chosen.output
    target = json.loads(decisions.read_text())["target"]
    assert target["parts"] == f"--group-by {LAST_DIGIT}"  # as the evaluation named them
    held = tmp_path / "held"
    applied = CliRunner().invoke(main, [*args, "-o", str(held), "--decisions", str(decisions)])
    assert applied.exit_code == 0, applied.output
    text = " ".join((held / "report.md").read_text().split())
    assert "The escape rate on these images' parts, 0.0%, is within the target" in text
    assert "| validation parts (predictions" in text


def test_parts_that_are_single_images_or_unnamed_are_refused(dataset: Path, tmp_path: Path) -> None:
    scored = tmp_path / "scored"
    args = ["eval", str(demo_model_path()), str(dataset), "-o", str(scored), "-q"]
    assert CliRunner().invoke(main, args).exit_code == 0
    predictions = str(scored / "predictions.parquet")
    alone = CliRunner().invoke(main, ["calibrate", predictions, "--per-part", "-o", "x.json"])
    assert alone.exit_code == 1 and "Traceback" not in alone.output
    assert "every part is one image" in alone.output
    regrouped = tmp_path / "regrouped.json"
    again = CliRunner().invoke(
        main,
        ["calibrate", predictions, "--per-part", "--group-by", LAST_DIGIT, "-o", str(regrouped)],
    )
    assert again.exit_code == 0, again.output
    assert (
        json.loads(regrouped.read_text())["validation"]["good"]
        + json.loads(regrouped.read_text())["validation"]["defective"]
        == 10
    )
    lone = CliRunner().invoke(main, ["calibrate", predictions, "--group-by", LAST_DIGIT])
    assert lone.exit_code == 2 and "--group-by names the parts --per-part counts" in lone.output


def _results(folder: Path) -> pa.Table:
    """A run's results made by hand: a watch inspected p3_cam1 twice (it was replaced),
    p2_cam1 could not be read, and one file's name matches no part."""
    rows = [
        ("p1_cam1.png", True, 0.9, None),
        ("p1_cam2.png", False, 0.2, None),
        ("p2_cam1.png", None, None, "damaged file"),
        ("p2_cam2.png", False, 0.1, None),
        ("p3_cam1.png", True, 0.8, None),
        ("p3_cam2.png", False, 0.3, None),
        ("p3_cam1.png", False, 0.4, None),  # inspected again: this result counts
        ("=odd.png", False, 0.05, None),
    ]
    table = pa.table(
        {
            "path": [str(folder / name) for name, *_ in rows],
            "is_defect": [judged for _, judged, _, _ in rows],
            "probability": pa.array([p for _, _, p, _ in rows], pa.float32()),
            "error": [error for *_, error in rows],
        }
    )
    return table


def test_a_runs_parts_are_rejected_passed_or_unknown(tmp_path: Path) -> None:
    from psicbatch.run.part_table import PartGrouping, part_table

    table = _results(tmp_path)
    parts = part_table(table, PartGrouping(r"(p[0-9])_cam")).to_pylist()
    assert [(p["part"], p["decision"]) for p in parts] == [
        ("p1", "reject"),
        ("p2", "unknown"),
        (str(tmp_path / "=odd.png"), "pass"),
        ("p3", "pass"),
    ]
    p1, p2, odd, p3 = parts
    assert (p1["images"], p1["judged_defective"], p1["errors"]) == (2, 1, 0)
    assert (p2["images"], p2["judged_defective"], p2["errors"]) == (2, 0, 1)
    assert p2["largest_probability"] == pytest.approx(0.1)
    assert (p3["images"], p3["judged_defective"]) == (2, 0)  # its last results only
    assert p1["defective_images"] == str(tmp_path / "p1_cam1.png")
    assert p2["defective_images"] == p3["defective_images"] == ""
    assert p3["largest_probability"] == pytest.approx(0.4)
    assert odd["images"] == 1
    # Parts of three images: a defect still rejects, an error is still unknown, but a
    # part whose images are all good is passed only when all three were inspected.
    three = part_table(table, PartGrouping(r"(p[0-9])_cam", images=3)).to_pylist()
    assert [(p["part"], p["decision"]) for p in three] == [
        ("p1", "reject"),
        ("p2", "unknown"),
        (str(tmp_path / "=odd.png"), "incomplete"),
        ("p3", "incomplete"),
    ]
    two = part_table(table, PartGrouping(r"(p[0-9])_cam", images=2)).to_pylist()
    assert [p["decision"] for p in two] == ["reject", "unknown", "incomplete", "pass"]


def _each_image_row_names_its_part(results: Path, table: Path, parts: list[dict]) -> None:
    """``report --csv --group-by``: each image's row with its part and the part's decision
    (as ``parts``, the rows of ``--parts-csv``, give it)."""
    args = ["report", str(results), "--csv", str(table), "--group-by", LAST_DIGIT]
    listed = CliRunner().invoke(main, args)
    assert listed.exit_code == 0, listed.output
    decision_of = {row["part"]: row["decision"] for row in parts}
    image_rows = list(csv.DictReader(table.open()))
    assert list(image_rows[0])[-2:] == ["part", "part_decision"] and len(image_rows) == 24
    for row in image_rows:
        assert row["part"] == Path(row["path"]).stem[-1]
        assert row["part_decision"] == decision_of[row["part"]]


def test_report_writes_a_runs_parts(dataset: Path, tmp_path: Path) -> None:
    results = tmp_path / "r.parquet"
    ran = CliRunner().invoke(main, ["run", str(dataset / "images"), "-o", str(results), "-q"])
    assert ran.exit_code in (0, 3), ran.output
    parts = tmp_path / "parts.csv"
    args = ["report", str(results), "--parts-csv", str(parts), "--group-by", LAST_DIGIT]
    written = CliRunner().invoke(main, args)
    assert written.exit_code == 0, written.output
    rows = list(csv.DictReader(parts.open()))
    judged = pq.read_table(results).to_pylist()
    rejected = {Path(row["path"]).stem[-1] for row in judged if row["is_defect"]}
    assert {row["part"] for row in rows if row["decision"] == "reject"} == rejected
    assert sum(int(row["images"]) for row in rows) == len(judged) == 24
    assert f"10 parts of 24 images: {len(rejected)} rejected" in written.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "pass --overwrite" in again.output
    alone = CliRunner().invoke(main, args[:-2])
    assert alone.exit_code == 2 and "--parts-csv needs --group-by" in alone.output
    page = tmp_path / "page.html"
    counted = CliRunner().invoke(
        main, ["report", str(results), "--html", str(page), "--group-by", LAST_DIGIT]
    )
    assert counted.exit_code == 0, counted.output
    said = f"10 parts of 24 images: {len(rejected)} rejected, {10 - len(rejected)} passed"
    assert said in counted.output and said in page.read_text()
    _each_image_row_names_its_part(results, tmp_path / "rows.csv", rows)
    masks_only = [*args[:2], "--mask-images", str(tmp_path / "masks"), "--group-by", LAST_DIGIT]
    nowhere = CliRunner().invoke(main, masks_only)
    assert nowhere.exit_code == 2 and "--group-by counts parts for --parts-csv, --csv" in (
        nowhere.output
    )
    every_side = [*args, "--part-images", "3", "--overwrite"]  # LAST_DIGIT's parts: 2 or 3
    sides = CliRunner().invoke(main, every_side)
    assert sides.exit_code == 0, sides.output
    decided = {row["part"]: row for row in csv.DictReader(parts.open())}
    for row in decided.values():
        short = int(row["images"]) < 3 and row["part"] not in rejected
        assert (row["decision"] == "incomplete") == short, row
    assert any(row["decision"] == "incomplete" for row in decided.values())
    assert " incomplete (images missing)" in sides.output
    short = sorted(name for name, row in decided.items() if row["decision"] == "incomplete")
    on_page = ["--html", str(page), "--group-by", LAST_DIGIT, "--part-images", "3"]
    listed = CliRunner().invoke(main, ["report", str(results), *on_page, "--overwrite"])
    assert listed.exit_code == 0, listed.output
    text = page.read_text()
    assert f"<h2>Parts neither rejected nor passed ({len(short)})</h2>" in text
    assert all(f"<tr><td>{name}</td><td>incomplete</td><td>2</td>" in text for name in short)
    loose = CliRunner().invoke(main, [*args[:2], "--html", str(page), "--part-images", "3"])
    assert loose.exit_code == 2 and "--part-images needs --group-by" in loose.output
    unmatched = CliRunner().invoke(main, [*args[:-1], "camera9", "--overwrite"])
    assert unmatched.exit_code == 1 and "Traceback" not in unmatched.output
    assert "--group-by 'camera9' matches no image's path (such as " in unmatched.output


def test_line_software_decides_a_part_as_the_parts_table_does(
    dataset: Path, tmp_path: Path
) -> None:
    """``psicbatch.part_decision`` on the results ``Inspector`` gives for each part's images
    equals the decision ``report --parts-csv`` writes for the part from a run's results."""
    import re

    import psicbatch
    from psicbatch.api import Inspection

    images = sorted((dataset / "images").glob("*.png"))
    results, table = tmp_path / "r.parquet", tmp_path / "parts.csv"
    fp32 = ["--precision", "fp32", "--threshold", "0.05", "-q"]
    ran = CliRunner().invoke(main, ["run", *map(str, images), "-o", str(results), *fp32])
    assert ran.exit_code in (0, 3), ran.output
    args = ["report", str(results), "--parts-csv", str(table), "--group-by", LAST_DIGIT]
    assert CliRunner().invoke(main, args).exit_code == 0
    written = {row["part"]: row["decision"] for row in csv.DictReader(table.open())}
    assert set(written.values()) == {"reject", "pass"}  # both kinds, or the test says little
    with psicbatch.Inspector(precision="fp32", threshold=0.05) as inspector:
        for part in written:
            ours = [image for image in images if re.search(LAST_DIGIT, image.stem)[1] == part]
            decided = psicbatch.part_decision(inspector.inspect(ours))
            assert decided == written[part], part
    failed = Inspection(0, "x.png", None, None, None, None, None, None, "damaged file")
    passed = Inspection(1, "y.png", 0.01, False, None, 0, None, (8, 8), None)
    assert psicbatch.part_decision([passed, failed]) == "unknown"
    assert psicbatch.part_decision([passed]) == "pass"
    assert psicbatch.part_decision([passed], images=2) == "incomplete"
    assert psicbatch.part_decision([passed, failed], images=3) == "unknown"
    with pytest.raises(psicbatch.errors.PsicbatchError, match="none given"):
        psicbatch.part_decision([])


def test_parts_decided_from_names_given_equal_those_matched_again() -> None:
    """``report --csv`` matches the pattern once and hands the names to the parts table:
    the same parts, a file inspected again deciding by its last result."""
    import pyarrow as pa

    from psicbatch.run.csv_table import with_parts
    from psicbatch.run.part_table import PartGrouping, part_names, part_table

    paths = ["/l/p1_a.png", "/l/p1_b.png", "/l/p2_a.png", "/l/p1_a.png", "/l/lone.png"]
    table = pa.table({
        "path": paths,
        "path_bytes": [path.encode() for path in paths],
        "is_defect": [True, False, False, False, True],  # p1_a good when inspected again
        "probability": [0.9, 0.1, 0.2, 0.3, 0.8],
        "error": [None] * 5,
    })  # fmt: skip
    grouping = PartGrouping(r"(p\d)_", 2)
    names = part_names(paths, grouping.pattern)
    assert part_table(table, grouping, names) == part_table(table, grouping)
    rows = with_parts(table, grouping).to_pylist()
    assert [(row["part"], row["part_decision"]) for row in rows] == [
        ("p1", "pass"), ("p1", "pass"), ("p2", "incomplete"), ("p1", "pass"),
        ("/l/lone.png", "reject"),
    ]  # fmt: skip
