"""Decisions for a line: thresholds for a target escape rate, area rules, decision files
applied by run, and recalibration from stored results."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.decisions import Decisions, Rule, choose, operating_points, upper_bound
from psicbatch.errors import PsicbatchError
from psicbatch.run.output import read_metadata
from psicbatch.scores import TypeEscapes

SCORES = np.array([0.1, 0.2, 0.3, 0.6, 0.8])
LABELS = np.array([False, False, True, False, True])
AREAS = np.array([0, 3, 40, 50, 5])


def test_zero_escapes_with_the_fewest_false_rejects_by_hand() -> None:
    point = choose(operating_points(SCORES, LABELS, AREAS, Rule()), max_escape_rate=0.0)
    # Both defects (0.3, 0.8) kept: the threshold sits between 0.2 and 0.3; the good image
    # at 0.6 is the one false reject.
    assert point.threshold == pytest.approx(0.25)
    assert (point.escapes, point.defective, point.false_rejects, point.good) == (0, 2, 1, 3)
    assert point.escape_rate_upper == pytest.approx(1 - 0.05 ** (1 / 2))


def test_a_false_reject_target_takes_the_fewest_escapes_within_it() -> None:
    point = choose(operating_points(SCORES, LABELS, AREAS, Rule()), None, 0.0)
    assert point.threshold == pytest.approx(0.7)  # between 0.6 and 0.8
    assert (point.escapes, point.false_rejects) == (1, 0)


def test_the_area_rules_by_hand() -> None:
    both = operating_points(SCORES, LABELS, AREAS, Rule("both", 10))
    # The defect at 0.8 has only 5 pixels: under "both" it escapes at every threshold.
    assert min(point.escapes for point in both) == 1
    either = operating_points(SCORES, LABELS, AREAS, Rule("either", 10))
    top = either[-1]  # a threshold above every score: only the area decides
    assert (top.escapes, top.false_rejects) == (1, 1)  # 0.8 (5 px) escapes; 0.6 (50 px) rejected


def test_an_area_rule_that_cannot_meet_the_target_says_so() -> None:
    with pytest.raises(PsicbatchError, match="no threshold gives an escape rate of at most 0 "):
        choose(operating_points(SCORES, LABELS, AREAS, Rule("both", 10)), 0.0)


def test_a_defect_types_limit_by_hand() -> None:
    """Scores 0.1 .. 0.8; defective: 0.3 (a pit) and 0.8 (a crack). Up to one escape in
    all, the fewest false rejects would let the pit escape; no pit may escape."""
    types = ["", "", "pit", "", "crack"]
    points = operating_points(SCORES, LABELS, AREAS, Rule(), types)
    loose = choose(points, max_escape_rate=0.5)
    assert loose.threshold == pytest.approx(0.7) and loose.by_type == (
        TypeEscapes("crack", 1, 0),
        TypeEscapes("pit", 1, 1),
    )
    strict = choose(points, 0.5, None, {"pit": 0.0})
    assert strict.threshold == pytest.approx(0.25)
    assert [kind.escapes for kind in strict.by_type] == [0, 0] and strict.false_rejects == 1
    with pytest.raises(PsicbatchError, match="false-reject rate of at most 0, pit at most 0 "):
        choose(points, None, 0.0, {"pit": 0.0})
    untyped = operating_points(SCORES, LABELS, AREAS, Rule(), [""] * 5)
    assert all(point.by_type == () for point in untyped)


@pytest.mark.parametrize("rule", [Rule(), Rule("both", 20), Rule("either", 20)])
def test_every_points_counts_are_those_of_judging_each_image(rule: Rule) -> None:
    """The cumulative counts against judging every image at every threshold, with ties,
    three defect types and images of none."""
    rng = np.random.default_rng(7)
    scores = rng.choice(np.linspace(0, 1, 40), 300)  # repeated scores: ties
    labels = rng.random(300) < 0.3
    areas = rng.integers(0, 60, 300)
    types = rng.choice(["", "crack", "pit", "stain"], 300).tolist()
    points = operating_points(scores, labels, areas, rule, types)
    assert len(points) == len(np.unique(scores)) + 1
    for point in points:
        judged = rule.defective(scores >= point.threshold, areas)
        assert point.escapes == int((labels & ~judged).sum())
        assert point.false_rejects == int((~labels & judged).sum())
        for kind in point.by_type:
            of_kind = labels & (np.array(types) == kind.defect_type)
            assert (kind.images, kind.escapes) == (of_kind.sum(), (of_kind & ~judged).sum())
        assert [kind.defect_type for kind in point.by_type] == ["", "crack", "pit", "stain"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros(5, bool), "no defective image: an escape rate cannot be estimated"),
        (np.ones(5, bool), "no defect-free image: a false-reject rate cannot be estimated"),
    ],
)
def test_one_sided_validation_data_is_refused(labels: np.ndarray, message: str) -> None:
    with pytest.raises(PsicbatchError, match=message):
        operating_points(SCORES, labels, AREAS, Rule())


def test_the_upper_bound_is_clopper_pearsons() -> None:
    assert upper_bound(0, 52) == pytest.approx(1 - 0.05 ** (1 / 52))  # about 3/n
    assert upper_bound(3, 3) == 1.0 and 0.0 < upper_bound(1, 100) < 0.05


def test_decision_files_round_trip_and_refuse_others(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    Decisions(0.25, Rule("both", 12), {"max_escape_rate": 0.0}).write(path)
    read = Decisions.read(path)
    assert read.classification_threshold == 0.25 and read.rule == Rule("both", 12)
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(PsicbatchError, match="not a psicbatch decision file"):
        Decisions.read(tmp_path / "other.json")
    with pytest.raises(PsicbatchError, match="unknown rule 'most'"):
        Rule("most")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("line")
    generate(root, 24, (128, 128), defect_rate=0.4, seed=21)
    return root


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_recalibrating_from_run_results_equals_calibrating_from_eval(
    dataset: Path, tmp_path: Path
) -> None:
    """The run's stored probabilities and mask areas give the eval's decisions."""
    model = str(Path(__file__).parents[1] / "psicbatch" / "assets" / "demo_model.pt")
    cli("eval", model, str(dataset), "--precision", "fp32", "-o", str(tmp_path / "eval"), "-q")
    results = tmp_path / "results.parquet"
    common = ["--decoder", "pil", "--precision", "fp32", "--device", "cpu", "-q"]
    cli("run", str(dataset / "images"), "-o", str(results), "--masks", "all", *common)
    rule = ["--rule", "both", "--min-area", "20"]
    from_eval = tmp_path / "from-eval.json"
    from_run = tmp_path / "from-run.json"
    cli("calibrate", str(tmp_path / "eval" / "predictions.parquet"), *rule, "-o", str(from_eval))
    cli("calibrate", str(results), "--labels", str(dataset), *rule, "-o", str(from_run))
    a, b = (json.loads(path.read_text())["validation"] for path in (from_eval, from_run))
    for key in ("threshold", "escapes", "defective", "false_rejects", "good"):
        assert a[key] == pytest.approx(b[key]), key
    assert "Images nearest the threshold" in from_run.with_suffix(".md").read_text()
    # Calibrating again replaces the decision file and its reports only with --overwrite.
    again = ["calibrate", str(results), "--labels", str(dataset), *rule, "-o", str(from_run)]
    refused = CliRunner().invoke(main, again)
    assert refused.exit_code == 1 and "holds an earlier psicbatch decision file" in refused.output
    cli(*again, "--overwrite")
    # A run whose masks were gated has no area for images judged good: refused, in one line.
    gated = tmp_path / "gated.parquet"
    cli("run", str(dataset / "images"), "-o", str(gated), *common)
    refused = CliRunner().invoke(
        main, ["calibrate", str(gated), "--labels", str(dataset), *rule, "-o", str(tmp_path / "x")]
    )
    assert refused.exit_code == 1 and "rerun with --masks all" in refused.output

    # The decision file applied by run: its rule decides, and the metadata says which file.
    applied = tmp_path / "applied.parquet"
    cli("run", str(dataset / "images"), "-o", str(applied), "--decisions", str(from_run), *common)
    metadata = read_metadata(applied)
    assert metadata["decisions"]["sha256"] and metadata["decisions"]["rule"]["min_area"] == 20
    # The file says which engine's probabilities it was chosen on; another engine (here
    # the same checkpoint in bf16) is refused before any work.
    assert json.loads(from_run.read_text())["scored_by"]["precision"] == "fp32"
    other = [*common[:2], "--precision", "bf16", *common[4:]]
    refused = CliRunner().invoke(
        main,
        ["run", str(dataset / "images"), "-o", str(tmp_path / "bf16.parquet"),
         "--decisions", str(from_run), *other],
    )  # fmt: skip
    assert refused.exit_code == 1, refused.output
    assert "chosen on another engine's probabilities (torch fp32" in refused.output
    assert not (tmp_path / "bf16.parquet").exists()
    assert metadata["thresholds"]["rule"] == "both"
    import pyarrow.parquet as pq

    rows = pq.read_table(applied).to_pylist()
    threshold = json.loads(from_run.read_text())["classification_threshold"]
    for row in rows:
        assert row["is_defect"] == (row["probability"] >= threshold and row["mask_area"] >= 20)
    # Under "either" the area alone can judge an image defective: its mask is computed
    # even when its probability is below the threshold.
    either, by_area, high = tmp_path / "either.json", tmp_path / "either.parquet", 0.999
    Decisions(high, Rule("either", 20), {}).write(either)
    cli("run", str(dataset / "images"), "-o", str(by_area), "--decisions", str(either), *common)
    every = {row["path"]: row["mask_area"] for row in pq.read_table(results).to_pylist()}
    decided = [(r["probability"], every[r["path"]], r) for r in pq.read_table(by_area).to_pylist()]
    assert any(p < high and area >= 20 for p, area, _ in decided)  # the case at stake
    for probability, area, row in decided:
        assert row["is_defect"] == (probability >= high or area >= 20)
        assert row["mask_area"] == (area if row["is_defect"] else 0)
    both = CliRunner().invoke(
        main, ["run", str(dataset / "images"), "--threshold", "0.5", "--decisions", str(from_run)]
    )
    assert both.exit_code == 2 and "give --threshold or --decisions, not both" in both.output


def test_a_region_of_interest_removes_defects_outside_it(dataset: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from PIL import Image

    from psicbatch.run import rle

    region = np.zeros((50, 40), np.uint8)
    region[:, :20] = 255  # inspect the left half only, at any image size
    Image.fromarray(region).save(tmp_path / "roi.png")
    common = ["--decoder", "pil", "--precision", "fp32", "--device", "cpu", "-q", "--masks", "all"]
    full, inside = tmp_path / "full.parquet", tmp_path / "inside.parquet"
    images = str(dataset / "images")
    cli("run", images, "-o", str(full), *common)
    cli("run", images, "-o", str(inside), "--roi", str(tmp_path / "roi.png"), *common)
    removed = 0
    rows = (pq.read_table(path).to_pylist() for path in (full, inside))
    for a, b in zip(*rows, strict=True):
        whole, kept = rle.decode(a["mask"]), rle.decode(b["mask"])
        left = np.zeros_like(whole)
        left[:, : whole.shape[1] // 2] = True
        assert np.array_equal(kept, whole & left)  # outside the region: nothing
        assert b["mask_area"] == int(kept.sum()) and b["probability"] == a["probability"]
        removed += int(whole.sum() - kept.sum())
    assert removed > 0  # the synthetic defects do fall outside it too
    assert read_metadata(inside)["roi"]["sha256"] and read_metadata(full)["roi"] is None
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "black.png")
    black = CliRunner().invoke(
        main, ["run", str(dataset / "images"), "--roi", str(tmp_path / "black.png"), *common]
    )
    assert black.exit_code == 1 and "has no white pixel: nothing would be inspected" in black.output
    (tmp_path / "notes.png").write_text("not an image")  # PIL's message names a buffer
    notes = CliRunner().invoke(main, ["run", images, "--roi", str(tmp_path / "notes.png")])
    assert notes.output.splitlines() == [
        f"Error: {tmp_path / 'notes.png'}: not a readable region-of-interest image (an unknown "
        "or damaged image format)"
    ]


def test_decisions_stored_in_an_engine_are_a_new_revision_that_run_applies(
    dataset: Path, tmp_path: Path
) -> None:
    from psicbatch.assets import demo_model_path
    from psicbatch.engines.build import BuildOptions, build_engine
    from psicbatch.engines.loading import load_engine
    from psicbatch.engines.manifest import read_manifest

    engine, _ = build_engine(
        demo_model_path(),
        BuildOptions(backend="torch", precision="fp32", max_batch=8, out=tmp_path / "engine"),
    )
    common = ["--decoder", "pil", "--device", "cpu", "-q", "--masks", "all"]
    results = tmp_path / "results.parquet"
    cli("run", str(dataset / "images"), "--engine", str(engine), "-o", str(results), *common)
    decisions = tmp_path / "decisions.json"
    output = cli(
        "calibrate", str(results), "--labels", str(dataset), "--engine", str(engine),
        "--rule", "both", "--min-area", "5", "-o", str(decisions),
    )  # fmt: skip
    assert "stored in" in output and "manifest revision 2" in output
    # Predictions another engine scored (the checkpoint itself, in bf16 on every CPU) are
    # not stored in this one.
    evaluation = tmp_path / "eval"
    checkpoint = [str(demo_model_path()), str(dataset), "--precision", "bf16"]
    cli("eval", *checkpoint, "-o", str(evaluation), "-q")
    refused = CliRunner().invoke(
        main,
        ["calibrate", str(evaluation / "predictions.parquet"), "--engine", str(engine),
         "-o", str(tmp_path / "other.json")],
    )  # fmt: skip
    assert refused.exit_code == 1 and "scored by another engine" in refused.output
    assert read_manifest(engine).revision == 2 and not (tmp_path / "other.json").exists()
    revised = read_manifest(engine)  # the engine file's sha256 is still checked, and holds
    assert revised.revision == 2 and revised.decisions["rule"] == {"name": "both", "min_area": 5}
    first = json.loads((engine / "manifest.r1.json").read_text())  # the earlier revision
    assert first["revision"] == 1 and first["decisions"] is None
    assert load_engine(engine, "cpu").manifest.revision == 2
    applied = tmp_path / "applied.parquet"
    cli("run", str(dataset / "images"), "--engine", str(engine), "-o", str(applied), *common)
    metadata = read_metadata(applied)
    assert metadata["decisions"]["manifest_revision"] == 2
    assert metadata["thresholds"]["min_area"] == 5
    assert metadata["thresholds"]["classification"] == revised.decisions["classification_threshold"]
    # A revised manifest does not vouch for a replaced engine file.
    (engine / revised.engine_file).write_bytes(b"not the engine")
    with pytest.raises(PsicbatchError, match="does not match its manifest"):
        load_engine(engine, "cpu")


def test_calibrate_in_square_millimetres_with_an_html_report(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"path": str(tmp_path / f"{i}.png"), "probability": float(p), "is_defective": bool(d),
         "predicted_defect_pixels": int(a)}
        for i, (p, d, a) in enumerate(zip(SCORES, LABELS, AREAS, strict=True))
    ]  # fmt: skip
    predictions = tmp_path / "predictions.parquet"
    pq.write_table(pa.Table.from_pylist(rows), predictions)
    out = tmp_path / "d.json"
    area = ["--rule", "either", "--min-area-mm2", "0.3", "--pixel-size", "0.1"]
    cli("calibrate", str(predictions), *area, "-o", str(out))
    decisions = Decisions.read(out)
    assert decisions.rule == Rule("either", 30) and decisions.pixel_size_mm == 0.1  # 0.3 / 0.01
    page = out.with_suffix(".html").read_text()
    assert "Images nearest the threshold" in page and 'src="data:image/png;base64,' in page
    assert "30 pixels (0.3 mm² at 0.1 mm per pixel)" in page
    alone = CliRunner().invoke(main, ["calibrate", str(predictions), "--pixel-size", "0.1"])
    assert alone.exit_code == 2 and "--min-area-mm2 and --pixel-size go together" in alone.output


def test_eval_scores_masks_inside_a_region_of_interest(dataset: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from PIL import Image

    region = np.zeros((10, 10), np.uint8)
    region[:, :5] = 255
    Image.fromarray(region).save(tmp_path / "roi.png")
    model = str(Path(__file__).parents[1] / "psicbatch" / "assets" / "demo_model.pt")
    common = ["--precision", "fp32", "-q"]
    cli("eval", model, str(dataset), "-o", str(tmp_path / "all"), *common)
    region_option = ["--roi", str(tmp_path / "roi.png")]
    cli("eval", model, str(dataset), "-o", str(tmp_path / "roi"), *region_option, *common)
    whole, inside = (
        pq.read_table(tmp_path / name / "predictions.parquet").to_pylist()
        for name in ("all", "roi")
    )
    for a, b in zip(whole, inside, strict=True):
        assert b["predicted_defect_pixels"] <= a["predicted_defect_pixels"]
        assert b["true_defect_pixels"] <= a["true_defect_pixels"]
        assert b["probability"] == a["probability"]  # the image decision is the network's
    truth = [sum(r["true_defect_pixels"] for r in rows) for rows in (inside, whole)]
    assert truth[0] < truth[1]  # labelled defects outside the region no longer count
    assert json.loads((tmp_path / "roi" / "metrics.json").read_text())["roi"]["sha256"]
    assert "inside the region of interest" in (tmp_path / "roi" / "report.md").read_text()


def test_calibrate_can_score_a_dataset_itself(dataset: Path, tmp_path: Path) -> None:
    model = str(Path(__file__).parents[1] / "psicbatch" / "assets" / "demo_model.pt")
    cli("eval", model, str(dataset), "--precision", "fp32", "-o", str(tmp_path / "eval"), "-q")
    stored, scored = tmp_path / "stored.json", tmp_path / "scored.json"
    cli("calibrate", str(tmp_path / "eval" / "predictions.parquet"), "-o", str(stored))
    cli("calibrate", str(dataset), "--model", model, "--precision", "fp32", "-o", str(scored))
    a, b = (json.loads(path.read_text())["validation"] for path in (stored, scored))
    for key in ("threshold", "escapes", "false_rejects", "defective", "good"):
        assert a[key] == b[key], key
    assert "evaluating" in cli(  # scoring a dataset is long work: it shows progress
        "calibrate", str(dataset), "--model", model, "-o", str(tmp_path / "p.json")
    )
    quiet = cli("calibrate", str(dataset), "--model", model, "-o", str(tmp_path / "q.json"), "-q")
    assert "evaluating" not in quiet and "decisions written" in quiet
    lone = CliRunner().invoke(main, ["calibrate", str(dataset), "-o", str(tmp_path / "x.json")])
    assert lone.exit_code == 2 and "give --model or --engine" in lone.output


def test_recalibrating_from_a_line_s_results_uses_its_labelled_images(
    dataset: Path, tmp_path: Path
) -> None:
    """A line's results hold many images, of which a review labels some, often copied out
    of the line's folder: calibration uses those, matched as eval RESULTS --labels matches
    them, and says what it left out."""
    import shutil

    line = tmp_path / "line"
    shutil.copytree(dataset / "images", line)
    generate(tmp_path / "more", 5, (64, 64), defect_rate=0.5, seed=11)
    for image in (tmp_path / "more" / "images").glob("*.png"):
        shutil.copy(image, line / f"unreviewed_{image.name}")
    reviewed = Path(shutil.copytree(dataset, tmp_path / "reviewed"))  # copies of line files
    common = ["--decoder", "pil", "--precision", "fp32", "--device", "cpu", "-q"]
    results, labelled_only = tmp_path / "line.parquet", tmp_path / "labelled.parquet"
    cli("run", str(line), "-o", str(results), "--masks", "all", *common)
    cli("run", str(dataset / "images"), "-o", str(labelled_only), "--masks", "all", *common)
    chosen = {}
    for source, labels in ((results, reviewed), (labelled_only, dataset)):
        out = tmp_path / f"{source.stem}.json"
        cli("calibrate", str(source), "--labels", str(labels), "-o", str(out))
        chosen[source.stem] = json.loads(out.read_text())["validation"]
    count = len(list((dataset / "images").glob("*.png")))
    assert chosen["line"]["source"].endswith(
        f"{count} of the {count} labelled images have a result; {count} of them as copies "
        "of the files the run inspected; 5 results are of images not labelled (not used)"
    )
    for key in ("threshold", "escapes", "defective", "false_rejects", "good"):
        assert chosen["line"][key] == chosen["labelled"][key], key
    # Options that do not fit the input are refused, not ignored.
    model = str(Path(__file__).parents[1] / "psicbatch" / "assets" / "demo_model.pt")
    cli("eval", model, str(dataset), "--precision", "fp32", "-o", str(tmp_path / "eval"), "-q")
    predictions = str(tmp_path / "eval" / "predictions.parquet")
    for args, said in (
        ([str(results), "--labels", str(dataset), "--model", model], "--model scores a dataset"),
        ([str(dataset), "--model", model, "--labels", str(dataset)], "--labels goes with run"),
    ):
        refused = CliRunner().invoke(main, ["calibrate", *args, "-o", str(tmp_path / "x.json")])
        assert refused.exit_code == 2 and said in refused.output, refused.output
    refused = CliRunner().invoke(
        main, ["calibrate", predictions, "--labels", str(dataset), "-o", str(tmp_path / "x.json")]
    )
    assert refused.exit_code == 1 and "hold their labels; give them without --labels" in (
        refused.output
    )


def test_run_results_of_files_whose_names_are_not_utf8_are_labelled(tmp_path: Path) -> None:
    """Results name such a file exactly in path_bytes; calibration finds its label there,
    not by the U+FFFD text of path, and its page reads the image there too."""
    root = tmp_path / "line"
    generate(root, 8, (64, 64), defect_rate=0.5, seed=3)
    odd = os.fsdecode(b"camera_\xff")
    for folder in (root / "images", root / "masks"):
        first = folder / "synth_00000.png"
        if first.exists():
            first.rename(folder / f"{odd}.png")
    results = tmp_path / "r.parquet"
    common = ["--decoder", "pil", "--precision", "fp32", "--device", "cpu", "-q"]
    cli("run", str(root / "images"), "-o", str(results), *common)
    out = tmp_path / "d.json"
    cli("calibrate", str(results), "--labels", str(root), "-o", str(out))
    validation = json.loads(out.read_text())["validation"]
    assert validation["defective"] + validation["good"] == 8
    page = out.with_suffix(".html").read_text()  # all 8 are nearest the threshold
    assert "camera_\ufffd.png" in page and "not readable" not in page


def _left_half_region(path: Path) -> Path:
    from PIL import Image

    region = np.zeros((10, 10), np.uint8)
    region[:, :5] = 255
    Image.fromarray(region).save(path)
    return path


def _refused(*args: str) -> str:
    """The one line a refused command prints."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def test_decisions_calibrated_inside_a_region_apply_that_region_in_every_run(
    dataset: Path, tmp_path: Path
) -> None:
    """An area rule chosen on masks counted inside a region holds inside it only: the
    decision file names the region, runs apply it without --roi, refuse another one, and
    refuse to go on without it when its file is gone."""
    import pyarrow.parquet as pq

    from psicbatch.assets import demo_model_path

    region = _left_half_region(tmp_path / "roi.png")
    fast = ["--precision", "fp32", "--device", "cpu", "-q"]
    evaluation = tmp_path / "eval"
    cli("eval", str(demo_model_path()), str(dataset), "-o", str(evaluation), "--roi",
        str(region), *fast)  # fmt: skip
    predictions = str(evaluation / "predictions.parquet")
    decisions = tmp_path / "d.json"
    area = ["--rule", "either", "--min-area", "5", "--max-escape-rate", "1"]
    cli("calibrate", predictions, *area, "-o", str(decisions))
    written = json.loads(decisions.read_text())
    assert written["version"] == 2 and written["roi"]["file"] == str(region)
    assert Decisions(0.5).to_dict()["version"] == 1  # files without a region stay readable
    assert "inside the region of interest" in decisions.with_suffix(".md").read_text()
    shown = json.loads(cli("info", str(decisions), "--json"))
    assert shown["rule"] == {"name": "either", "min_area": 5} and shown["roi"] == written["roi"]
    assert shown["classification_threshold"] == written["classification_threshold"]
    assert shown["validation"]["defective"] == written["validation"]["defective"]
    assert "psicbatch evaluation" in cli("info", str(evaluation / "metrics.json"))
    scored = tmp_path / "scored.json"  # the dataset scored inside the region by calibrate
    cli("calibrate", str(dataset), "--model", str(demo_model_path()), "--roi", str(region),
        *area, *fast, "-o", str(scored))  # fmt: skip
    by_itself = json.loads(scored.read_text())
    assert by_itself["roi"] == written["roi"]
    for key in ("threshold", "escapes", "false_rejects", "defective", "good"):
        assert by_itself["validation"][key] == written["validation"][key], key
    run = ["run", str(dataset / "images"), "--decisions", str(decisions), *fast, "--masks", "all"]
    implied, explicit = tmp_path / "implied.parquet", tmp_path / "explicit.parquet"
    cli(*run, "-o", str(implied))
    cli(*run, "-o", str(explicit), "--roi", str(region))
    assert read_metadata(implied)["roi"]["sha256"] == written["roi"]["sha256"]
    checked = tmp_path / "checked"  # eval of the decisions scores inside their region too
    cli("eval", str(demo_model_path()), str(dataset), "-o", str(checked), "--decisions",
        str(decisions), *fast)  # fmt: skip
    assert json.loads((checked / "metrics.json").read_text())["roi"] == written["roi"]
    assert pq.read_table(implied).to_pylist() == pq.read_table(explicit).to_pylist()
    other = _left_half_region(tmp_path / "other.png")
    other.write_bytes(other.read_bytes() + b"\0")  # the same picture, other bytes
    refused = _refused(*run, "-o", str(tmp_path / "x.parquet"), "--roi", str(other))
    assert "not the region of interest the decisions of" in refused
    moved = region.rename(tmp_path / "moved.png")
    refused = _refused(*run, "-o", str(tmp_path / "x.parquet"))
    assert "no longer there unchanged; give that region with --roi" in refused
    cli(*run, "-o", str(tmp_path / "found.parquet"), "--roi", str(moved))
    assert not (tmp_path / "x.parquet").exists()
    # Masks counted on whole images have no region to locate.
    cli("eval", str(demo_model_path()), str(dataset), "-o", str(tmp_path / "whole"), *fast)
    whole = str(tmp_path / "whole" / "predictions.parquet")
    refused = _refused("calibrate", whole, "--roi", str(moved), "-o", str(tmp_path / "w.json"))
    assert "counted on whole images" in refused


def test_a_run_applies_the_region_as_it_was_checked_even_if_its_file_then_changes(
    dataset: Path, tmp_path: Path
) -> None:
    """The region is read once, where it is checked: a file replaced after the run has
    started (here, by a region that inspects everything) changes neither what two
    worker processes apply nor what the results record."""
    import hashlib

    import pyarrow.parquet as pq

    from psicbatch.assets import demo_model_path
    from psicbatch.engines.spec import EngineSpec
    from psicbatch.run import rle
    from psicbatch.run.run_decisions import run_decisions
    from psicbatch.run.runner import RunOptions, RunSummary, run

    region = _left_half_region(tmp_path / "roi.png")
    checked = hashlib.sha256(region.read_bytes()).hexdigest()
    everything = tmp_path / "everything.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(everything)
    images = sorted((dataset / "images").iterdir())
    spec = EngineSpec(checkpoint=demo_model_path(), precision="fp32")

    def results(
        out: Path, roi: Path, on_rows: Callable[[RunSummary], None] | None, workers: int
    ) -> list:
        chosen = run_decisions(None, None, None, roi)
        options = RunOptions(out, batch_size=4, workers=workers, devices=("cpu",),
                             decoder="pil", roi=chosen.roi, masks="all")  # fmt: skip
        run(images, spec, options, on_rows)
        return pq.read_table(out).to_pylist()

    def replace_region(summary: RunSummary) -> None:
        region.write_bytes(everything.read_bytes())

    whole = results(tmp_path / "whole.parquet", everything, None, workers=1)  # the reference
    assert any(rle.decode(row["mask"])[:, 64:].any() for row in whole)  # the case at stake
    inside = results(tmp_path / "inside.parquet", region, replace_region, workers=2)
    assert region.read_bytes() == everything.read_bytes()  # the file did change
    assert read_metadata(tmp_path / "inside.parquet")["roi"]["sha256"] == checked
    for full, kept in zip(whole, inside, strict=True):
        mask = rle.decode(full["mask"])
        mask[:, 64:] = False
        assert np.array_equal(rle.decode(kept["mask"]), mask), kept["path"]


def test_an_engine_keeps_the_region_its_decisions_were_calibrated_inside(
    dataset: Path, tmp_path: Path
) -> None:
    """calibrate --engine copies the region into the engine folder, named by its hash:
    run --engine and the Inspector apply it after the original is gone, and a rebuild
    into the folder counts it as the engine's own."""
    import pyarrow.parquet as pq

    import psicbatch
    from psicbatch.assets import demo_model_path
    from psicbatch.engines.build import BuildOptions, build_engine
    from psicbatch.engines.destination import check_destination

    engine, _ = build_engine(
        demo_model_path(),
        BuildOptions(backend="torch", precision="fp32", max_batch=8, out=tmp_path / "engine"),
    )
    region = _left_half_region(tmp_path / "roi.png")
    evaluation = tmp_path / "eval"
    cli("eval", "--engine", str(engine), str(dataset), "-o", str(evaluation), "--roi",
        str(region), "-q")  # fmt: skip
    predictions = str(evaluation / "predictions.parquet")
    area = ["--rule", "either", "--min-area", "5", "--max-escape-rate", "1"]
    cli("calibrate", predictions, "--engine", str(engine), *area, "-o", str(tmp_path / "d.json"))
    sha256 = json.loads((tmp_path / "d.json").read_text())["roi"]["sha256"]
    kept = engine / f"roi-{sha256[:12]}.png"
    assert kept.read_bytes() == region.read_bytes()
    region.unlink()
    results = tmp_path / "r.parquet"
    fast = ["--decoder", "pil", "--device", "cpu", "-q", "--masks", "all"]
    cli("run", str(dataset / "images"), "--engine", str(engine), "-o", str(results), *fast)
    assert read_metadata(results)["roi"]["file"] == str(kept)
    rows = pq.read_table(results).to_pylist()
    files = sorted((dataset / "images").glob("*.png"))
    with psicbatch.Inspector(engine, device="cpu", decoder="pil", masks="all") as inspector:
        found = {r.path: (r.mask_area, r.is_defect) for r in inspector.inspect(files)}
    assert found == {row["path"]: (row["mask_area"], row["is_defect"]) for row in rows}
    check_destination(engine, overwrite=True)  # nothing foreign in the folder
    # Without the region's file, it cannot be stored: refused before anything is written.
    refused = _refused(
        "calibrate", predictions, "--engine", str(engine), *area, "-o", str(tmp_path / "e.json")
    )
    assert "give it with --roi to store it with the engine" in refused
    assert not (tmp_path / "e.json").exists()


def test_eval_judges_images_by_the_decisions_a_run_applies(dataset: Path, tmp_path: Path) -> None:
    """eval --decisions (or an engine's stored decisions) judges each image as a run of
    the same decisions does, rule and area included, and its report sets the escapes and
    false rejects on these images beside the target and the validation figures."""
    import pyarrow.parquet as pq

    from psicbatch.assets import demo_model_path

    model, fast = str(demo_model_path()), ["--precision", "fp32", "--device", "cpu", "-q"]
    cli("eval", model, str(dataset), "-o", str(tmp_path / "val"), *fast)
    decisions = tmp_path / "d.json"
    said = cli("calibrate", str(tmp_path / "val" / "predictions.parquet"), "--rule", "both",
               "--min-area", "20", "--max-escape-rate", "0", "-o", str(decisions))  # fmt: skip
    assert f"next: psicbatch eval MODEL HELD_OUT_DATA --decisions {decisions}" in said
    either = tmp_path / "either.json"  # the area alone judges some images defective
    Decisions(0.999, Rule("either", 20), {"max_false_reject_rate": 0.0}).write(either)
    nothing = tmp_path / "nothing.json"  # no image has that large a mask: all escape
    Decisions(0.0, Rule("both", 10**9), {"max_escape_rate": 0.0}).write(nothing)
    for name, chosen in (("nothing", nothing), ("either", either), ("both", decisions)):
        held_out = tmp_path / name
        cli("eval", model, str(dataset), "-o", str(held_out), "--decisions", str(chosen), *fast)
        results = tmp_path / f"{name}.parquet"
        cli("run", str(dataset / "images"), "-o", str(results), "--decisions", str(chosen),
            "--decoder", "pil", *fast)  # fmt: skip
        by_run = {row["path"]: row["is_defect"] for row in pq.read_table(results).to_pylist()}
        rows = pq.read_table(held_out / "predictions.parquet").to_pylist()
        assert {row["path"]: row["predicted_defective"] for row in rows} == by_run
        recorded = json.loads((held_out / "metrics.json").read_text())
        threshold = json.loads(chosen.read_text())["classification_threshold"]
        assert recorded["thresholds"]["classification"] == threshold
        assert recorded["decisions"]["source"] == f"the decision file {chosen}"
        if name == "either":
            assert any(r["probability"] < 0.999 and r["predicted_defective"] for r in rows)
    # Calibrated on these images, the rates here are validation's, within the target.
    report = (tmp_path / "both" / "report.md").read_text()
    validation = json.loads(decisions.read_text())["validation"]
    escapes = f"{validation['escapes']} of {validation['defective']}"
    assert report.count(escapes) == 2 and "within the target" in report
    assert "and at least 20 defect pixels (rule both)" in report
    assert "All of these images are among the 24 images the decisions were chosen on" in report
    other = tmp_path / "other"  # images the decisions were not chosen on: a real check
    generate(other, 6, (128, 128), defect_rate=0.5, seed=4)
    cli("eval", model, str(other), "-o", str(tmp_path / "held"), "--decisions", str(decisions),
        *fast)  # fmt: skip
    held = (tmp_path / "held" / "report.md").read_text()
    assert "None of these images is among the 24 images the decisions were chosen on" in held
    assert "Escapes and false rejects" in (tmp_path / "both" / "report.html").read_text()
    assert "within the target" in (tmp_path / "either" / "report.md").read_text()
    missed = (tmp_path / "nothing" / "report.md").read_text()
    assert "escape rate on these images, 100.0%, is above the target" in missed
    shown = json.loads(cli("info", str(tmp_path / "both"), "--json"))
    assert f"from the decision file {decisions}" in shown["judged defective"]
    # Without decisions: the model's threshold, said so.
    plain = json.loads((tmp_path / "val" / "metrics.json").read_text())["decisions"]
    assert plain["source"] == "the model's threshold" and plain["rule"] == "classifier"
    # Decisions chosen on fp32 probabilities do not judge bf16 ones.
    other = [model, str(dataset), "--decisions", str(decisions), "--precision", "bf16"]
    refused = _refused("eval", *other, "-o", str(tmp_path / "bf16"), "-q")
    assert "chosen on another engine's probabilities" in refused
    both = CliRunner().invoke(
        main, ["eval", model, str(dataset), "--threshold", "0.5", "--decisions", str(decisions)]
    )
    assert both.exit_code == 2 and "give --threshold or --decisions, not both" in both.output


def test_eval_of_an_engine_applies_its_stored_decisions(dataset: Path, tmp_path: Path) -> None:
    from psicbatch.assets import demo_model_path
    from psicbatch.engines.build import BuildOptions, build_engine

    engine, _ = build_engine(
        demo_model_path(),
        BuildOptions(backend="torch", precision="fp32", max_batch=8, out=tmp_path / "engine"),
    )
    cli("eval", "--engine", str(engine), str(dataset), "-o", str(tmp_path / "val"), "-q")
    predictions = str(tmp_path / "val" / "predictions.parquet")
    said = cli("calibrate", predictions, "--engine", str(engine), "--max-false-reject-rate", "0",
               "-o", str(tmp_path / "d.json"))  # fmt: skip
    assert f"next: psicbatch eval HELD_OUT_DATA --engine {engine}" in said
    stored = json.loads((tmp_path / "d.json").read_text())["classification_threshold"]
    shown = json.loads(cli("info", str(engine), "--json"))  # as a run of the engine judges
    assert shown["judged defective"] == (
        f"probability >= {stored:.4g}, from the decisions stored with {engine} "
        "(manifest revision 2)"
    )
    assert shown["decisions"]["decision_file"] == str(tmp_path / "d.json")
    cli("eval", "--engine", str(engine), str(dataset), "-o", str(tmp_path / "stored"), "-q")
    recorded = json.loads((tmp_path / "stored" / "metrics.json").read_text())
    assert recorded["thresholds"]["classification"] == stored
    assert recorded["decisions"]["source"].endswith("(manifest revision 2)")
    assert recorded["classification"]["fp"] == 0  # the target: no false rejects
    given = tmp_path / "given"
    cli("eval", "--engine", str(engine), str(dataset), "-o", str(given), "--threshold", "0", "-q")
    recorded = json.loads((given / "metrics.json").read_text())
    assert recorded["decisions"]["source"] == "the threshold given"
    assert recorded["classification"]["fn"] == 0  # every image judged defective
