"""Evaluation reads each image as it is scored: bounded memory on a test set of any size,
the same figures as scoring images held in memory, and one decode for a comparison; its
page shows the images the engine got most wrong."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from psicbatch.assets import demo_model_path
from psicbatch.checkpoint import load_checkpoint, save_checkpoint
from psicbatch.cli import main
from psicbatch.cpus import available_cpus
from psicbatch.data import labelled
from psicbatch.data.labelled import read_labelled
from psicbatch.data.layouts import read_dataset
from psicbatch.data.memory import load_into_memory
from psicbatch.data.synth import generate
from psicbatch.engines.base import Engine
from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.evaluate import evaluate, evaluate_engines
from psicbatch.gallery import KINDS, THUMBNAIL_HEIGHT, Gallery
from psicbatch.pictures import shrink_mask, thumbnail_size

IMAGES = 40


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("labelled")
    generate(data, IMAGES, (96, 160), defect_rate=0.3, seed=3)
    return data


def _same(first: dict, second: dict) -> bool:
    return (
        all(
            a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
            for a, b in zip(first.values(), second.values(), strict=True)
        )
        and first.keys() == second.keys()
    )


def test_streamed_scores_equal_scores_of_images_held_in_memory(dataset: Path) -> None:
    engine = open_engine(EngineSpec(checkpoint=demo_model_path(), precision="fp32"), "cpu", 8)
    samples = read_dataset(dataset, "folder")
    preprocessing = engine.manifest.engine_preprocessing()
    held = load_into_memory(samples, preprocessing.input_size, preprocessing.channels)
    in_memory = evaluate(engine, samples, held, batch_size=8)
    (streamed,) = evaluate_engines(
        [engine], read_labelled(samples, preprocessing, 8), len(samples), batch_size=8
    )
    assert len(streamed.rows) == IMAGES
    assert all(_same(a, b) for a, b in zip(in_memory.rows, streamed.rows, strict=True))
    assert streamed.summary.to_dict() == in_memory.summary.to_dict()


def test_inference_beside_the_scoring_scores_the_same(dataset: Path) -> None:
    """What a GPU does (inference a batch ahead in its own thread), run on the CPU."""
    engine = open_engine(EngineSpec(checkpoint=demo_model_path(), precision="fp32"), "cpu", 8)
    samples = read_dataset(dataset, "folder")
    preprocessing = engine.manifest.engine_preprocessing()
    (series, beside) = (
        evaluate_engines(
            [engine], read_labelled(samples, preprocessing, 4), len(samples), 4, overlap=overlap
        )[0]
        for overlap in (False, True)
    )
    assert all(_same(a, b) for a, b in zip(series.rows, beside.rows, strict=True))
    assert len(beside.rows) == IMAGES


def test_eval_reads_images_as_it_scores_them(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the first batch reaches the engine, at most the read-ahead has been decoded,
    not the whole test set (every header was read before: no image is decoded then)."""
    decoded: list[str] = []
    read_when_scored: list[int] = []
    original_read, original_infer = labelled.read_image, Engine.infer

    def counting_read(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        decoded.append(str(path))
        return original_read(path, *args, **kwargs)

    def recording_infer(self, images):  # type: ignore[no-untyped-def]
        read_when_scored.append(sum("/images/" in name for name in decoded))
        return original_infer(self, images)

    monkeypatch.setattr(labelled, "read_image", counting_read)
    monkeypatch.setattr(Engine, "infer", recording_infer)
    args = ["eval", str(demo_model_path()), str(dataset), "-o", str(tmp_path / "e")]
    result = CliRunner().invoke(main, [*args, "--batch-size", "4", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert len(read_when_scored) == IMAGES // 4
    assert read_when_scored[0] <= 2 * 4 + available_cpus() + 4 < IMAGES


def test_compare_to_a_checkpoint_that_reads_images_otherwise_is_one_line(
    dataset: Path, tmp_path: Path
) -> None:
    rgb = tmp_path / "rgb.pt"
    made = CliRunner().invoke(main, ["init", str(rgb), "--in-channels", "3", "--width", "0.125"])
    assert made.exit_code == 0, made.output
    args = ["eval", str(demo_model_path()), str(dataset), "-o", str(tmp_path / "e")]
    result = CliRunner().invoke(main, [*args, "--compare-to", str(rgb), "-q"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert f"{rgb}: reads images differently" in result.output
    assert "channels 3 (engine: 1)" in result.output
    assert not (tmp_path / "e").exists()


def _row(index: int, defective: bool, judged: bool, probability: float, iou: float) -> dict:
    return {
        "id": str(index),
        "path": f"/nowhere/{index}.png",
        "is_defective": defective,
        "predicted_defective": judged,
        "probability": probability,
        "mask_iou": iou,
    }


def test_the_gallery_keeps_the_worst_images_of_each_kind() -> None:
    gallery = Gallery(size=3)
    mask = np.zeros((40, 80), bool)
    rows = [_row(i, True, False, p, math.nan) for i, p in enumerate([0.3, 0.1, 0.4, 0.1, 0.05])]
    rows += [_row(10 + i, False, True, p, math.nan) for i, p in enumerate([0.6, 0.9])]
    rows += [_row(20 + i, True, True, 0.9, iou) for i, iou in enumerate([0.8, 0.2, math.nan])]
    rows.append(_row(30, False, False, 0.01, math.nan))  # right: in no kind
    for row in rows:
        gallery.offer(row, mask, mask)
    missed, alarms, masks = ([e.row["id"] for e in gallery.worst(kind)] for kind in KINDS)
    assert missed == ["4", "1", "3"]  # lowest probability first; of two equal, the first seen
    assert alarms == ["11", "10"]
    assert masks == ["21", "20"]  # an image without a true mask has no mask IoU
    assert list(gallery.counts.values()) == [5, 2, 2]
    assert gallery.worst(KINDS[0])[0].truth.shape == (THUMBNAIL_HEIGHT, 2 * THUMBNAIL_HEIGHT)


def test_a_missed_defect_without_a_true_mask_is_shown_as_such() -> None:
    from psicbatch.evaluation_page import _card
    from psicbatch.pictures import PictureReader

    gallery = Gallery(size=3)
    predicted = np.zeros((40, 80), bool)
    row = {**_row(0, True, False, 0.2, math.nan), "predicted_defect_pixels": 0}
    gallery.offer({**row, "true_defect_pixels": None}, None, predicted)
    (example,) = gallery.worst(KINDS[0])
    assert not example.truth.any()  # nothing drawn as the true defect
    assert "0 px predicted, no true mask</figcaption>" in _card(example, PictureReader())


def test_a_crack_one_pixel_wide_stays_visible_in_a_thumbnail() -> None:
    mask = np.zeros((2000, 600), bool)
    mask[:, 300] = True
    small = shrink_mask(mask, thumbnail_size(mask.shape, 220))
    assert small.shape == (220, 66) and small.any(axis=1).all()


def test_eval_writes_a_page_of_the_images_it_got_most_wrong(dataset: Path, tmp_path: Path) -> None:
    strict = load_checkpoint(demo_model_path())  # judges most images defect-free
    strict.thresholds = replace(strict.thresholds, classification=0.999)
    model = save_checkpoint(strict, tmp_path / "strict.pt")
    out = tmp_path / "e"
    result = CliRunner().invoke(main, ["eval", str(model), str(dataset), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "metrics.json").read_text())
    missed = summary["classification"]["fn"]
    assert missed > 0
    page = (out / "report.html").read_text()
    section = page[page.index("<h2>Missed defects") : page.index("<h2>False alarms")]
    assert f"<h2>Missed defects ({missed})</h2>" in section
    assert section.count('<figure><img src="data:image/png;base64,') == missed
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    lowest = min((r for r in rows if r["is_defective"]), key=lambda r: r["probability"])
    assert section.index(lowest["path"]) < section.index("</figure>")  # listed first
    assert page.count('alt="pr_curve"') == 1
    shown = CliRunner().invoke(main, ["info", str(out)], terminal_width=200)
    assert shown.exit_code == 0 and "psicbatch evaluation" in shown.output
    assert f"{summary['classification']['fp']} / {missed}" in shown.output
    (out / "metrics.json").write_text("{")
    damaged = CliRunner().invoke(main, ["info", str(out)])
    assert (
        damaged.exit_code == 1 and "metrics.json: not a readable psicbatch record" in damaged.output
    )


def test_eval_of_files_whose_names_are_not_utf8(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate(data, 8, (64, 64), defect_rate=0.5, seed=1)
    odd = os.fsdecode(b"camera_\xff")
    for folder in ("images", "masks"):
        if (data / folder / "synth_00000.png").exists():
            (data / folder / "synth_00000.png").rename(data / folder / f"{odd}.png")
    out = tmp_path / "e"
    args = ["eval", str(demo_model_path()), str(data), "-o", str(out), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    (row,) = (r for r in rows if r["path_bytes"].endswith(b"camera_\xff.png"))
    assert row["path"].endswith("camera_\ufffd.png") and row["id"] == "camera_\ufffd"


def test_eval_names_the_files_it_wrote(tmp_path: Path) -> None:
    """Without defective images there are no curves, and the message says so."""
    generate(tmp_path / "good", 6, (64, 64), defect_rate=0.0, seed=2)
    out = tmp_path / "e"
    args = ["eval", str(demo_model_path()), str(tmp_path / "good"), "-o", str(out), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = "(report.html, report.md, metrics.json, predictions.parquet)"
    assert f"report written to {out}/ {written}" in result.output
    assert not list(out.glob("*.png"))


def sorted_by_review(data: Path, root: Path) -> list[str]:
    """``data`` (the folder layout) as a review sorts it: ok/ and ng/, with the masks of
    every other defective image; returns the names of the defective ones without."""
    for folder in ("ok", "ng", "masks"):
        (root / folder).mkdir(parents=True)
    defective = []
    for image in sorted((data / "images").iterdir()):
        mask = data / "masks" / image.name
        if mask.exists() and np.asarray(Image.open(mask)).any():
            defective.append(image.stem)
            os.link(image, root / "ng" / image.name)
            if len(defective) % 2:
                os.link(mask, root / "masks" / image.name)
        else:
            os.link(image, root / "ok" / image.name)
    return defective[1::2]


def test_reviewed_images_without_masks_are_scored_as_images_only(
    dataset: Path, tmp_path: Path
) -> None:
    """A review's ok/ng folders give the same image decisions as the masks would; mask
    scores come from the defective images with masks alone, and the report says so."""
    reviewed = tmp_path / "reviewed"
    unmasked = sorted_by_review(dataset, reviewed)
    assert unmasked
    model = str(demo_model_path())
    for name, data, layout in (("full", dataset, "folder"), ("sorted", reviewed, "classes")):
        args = ["eval", model, str(data), "--layout", layout, "--precision", "fp32"]
        result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / name), "-q"])
        assert result.exit_code == 0, result.output
    full = {
        r["id"]: r for r in pq.read_table(tmp_path / "full" / "predictions.parquet").to_pylist()
    }
    rows = pq.read_table(tmp_path / "sorted" / "predictions.parquet").to_pylist()
    assert len(rows) == len(full) == IMAGES
    for row in rows:
        other = full[row["id"].split("/")[1]]
        assert row["probability"] == pytest.approx(other["probability"], abs=1e-6)
        assert row["is_defective"] == other["is_defective"]
        assert row["mask_known"] is (row["id"].split("/")[1] not in unmasked)
        if row["mask_known"]:
            assert row["true_defect_pixels"] == other["true_defect_pixels"]
            assert row["mask_iou"] == pytest.approx(other["mask_iou"], nan_ok=True)
        else:
            assert row["true_defect_pixels"] is None and math.isnan(row["mask_iou"])
    summary, reference = (
        json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("sorted", "full")
    )
    assert summary["classification"] == reference["classification"]
    assert summary["unmasked_defective"] == len(unmasked)
    masked = [r for r in full.values() if r["id"] not in unmasked and r["is_defective"]]
    strict = np.mean([r["mask_iou"] for r in masked])
    assert summary["segmentation"]["mask_miou"] == pytest.approx(strict)
    report = (tmp_path / "sorted" / "report.md").read_text()
    assert f"{len(unmasked)} of the defective images have no mask" in report
    shown = CliRunner().invoke(main, ["info", str(tmp_path / "sorted"), "--json"]).output
    assert json.loads(shown)["without a mask"] == len(unmasked)
    # Training learns the masks from the images with masks, the decision from all.
    tiny = ["--width", "0.125", "--seg-epochs", "1", "--input-size", "48x80"]
    args = ["train", str(reviewed), "--out", str(tmp_path / "m.pt"), *tiny]
    result = CliRunner().invoke(main, [*args, "--cls-epochs", "1"])
    assert result.exit_code == 0, result.output
    defective = summary["defective_images"]
    assert (
        f"note: {len(unmasked)} of the {defective} defective images have no mask: the masks "
        f"are learned from the other {defective - len(unmasked)}"
    ) in result.output
    trained = load_checkpoint(tmp_path / "m.pt").training["dataset"]
    assert trained["defective_without_masks"] == len(unmasked)
    shown = CliRunner().invoke(main, ["info", str(tmp_path / "m.pt"), "--json"]).output
    assert json.loads(shown)["training"]["defective_without_masks"] == len(unmasked)
    # Where every defective image's mask is needed: a one-line refusal, naming one (before
    # any epoch: step 2's 30 are not run).
    for more, message in (
        (["--tile", "48x48", "--overlap", "8"], "defective without a mask; tiled training"),
        (["--mode", "end-to-end"], "end-to-end training learns masks and decisions"),
    ):
        result = CliRunner().invoke(main, [*args, "--overwrite", *more])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output


def test_defect_types_of_a_review_get_their_own_escapes(dataset: Path, tmp_path: Path) -> None:
    """Which kind of defect a line misses: each subfolder of ng/ is a defect type."""
    reviewed = tmp_path / "reviewed"
    sorted_by_review(dataset, reviewed)
    (reviewed / "ng" / "scratch").mkdir()
    moved = sorted((reviewed / "ng").glob("*.png"))[::2]
    for image in moved:
        image.rename(reviewed / "ng" / "scratch" / image.name)
    out = tmp_path / "e"
    args = ["eval", str(demo_model_path()), str(reviewed), "--precision", "fp32", "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "metrics.json").read_text())
    types = {t["defect_type"]: t for t in summary["defect_types"]}
    assert set(types) == {"", "scratch"} and types["scratch"]["images"] == len(moved)
    assert sum(t["images"] for t in types.values()) == summary["defective_images"]
    assert sum(t["escapes"] for t in types.values()) == summary["classification"]["fn"]
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    scratches = [r for r in rows if r["defect_type"] == "scratch"]
    masked = [r["mask_iou"] for r in scratches if r["mask_known"]]
    assert types["scratch"]["with_masks"] == len(masked)
    assert types["scratch"]["mask_miou"] == pytest.approx(np.mean(masked), nan_ok=True)
    for page in ("report.md", "report.html"):
        assert "Defective images by type" in (out / page).read_text()
    line = next(
        x for x in (out / "report.md").read_text().splitlines() if x.startswith("| scratch")
    )
    assert line.split(" | ")[2].endswith("%")  # the escape rate's 95% upper bound
    shown = json.loads(CliRunner().invoke(main, ["info", str(out), "--json"]).output)
    scratch = types["scratch"]
    assert (
        f"scratch: {scratch['escapes']} of {scratch['images']}" in shown["escapes by defect type"]
    )


def typed_review(dataset: Path, tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    """``dataset`` sorted by review into ok/ and ng/, every second defective image in
    ng/scratch/, evaluated: the review, its predictions and their defective rows."""
    reviewed = tmp_path / "reviewed"
    sorted_by_review(dataset, reviewed)
    (reviewed / "ng" / "scratch").mkdir()
    for image in sorted((reviewed / "ng").glob("*.png"))[::2]:
        image.rename(reviewed / "ng" / "scratch" / image.name)
    args = ["eval", str(demo_model_path()), str(reviewed), "--precision", "fp32", "-q"]
    assert CliRunner().invoke(main, [*args, "-o", str(tmp_path / "e")]).exit_code == 0
    predictions = tmp_path / "e" / "predictions.parquet"
    rows = [r for r in pq.read_table(predictions).to_pylist() if r["is_defective"]]
    return reviewed, predictions, rows


def test_decisions_say_which_defect_types_escape_them(dataset: Path, tmp_path: Path) -> None:
    """Calibration on a review sorted by type: each type's escapes at the chosen threshold,
    counted from the very probabilities the threshold was chosen on."""
    _, predictions, rows = typed_review(dataset, tmp_path)
    # Parts pass with defects below a minimum area: some of each type, as lines allow.
    min_area = int(np.median([r["predicted_defect_pixels"] for r in rows])) + 1
    out = tmp_path / "d.json"
    args = ["calibrate", str(predictions), "--rule", "both", "--min-area", str(min_area)]
    result = CliRunner().invoke(main, [*args, "--max-escape-rate", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    chosen = json.loads(out.read_text())["validation"]

    def escapes(row: dict) -> bool:
        found = row["predicted_defect_pixels"] >= min_area
        return not (found and row["probability"] >= chosen["threshold"])

    expected = {
        kind: {
            "defect_type": kind,
            "images": sum(r["defect_type"] == kind for r in rows),
            "escapes": sum(r["defect_type"] == kind and escapes(r) for r in rows),
        }
        for kind in ("", "scratch")
    }
    assert chosen["defect_types"] == [expected[""], expected["scratch"]]
    assert sum(kind["escapes"] for kind in expected.values()) == chosen["escapes"] > 0
    scratch = expected["scratch"]
    for page in ("d.md", "d.html"):
        assert "Defective images by type, with these decisions" in (tmp_path / page).read_text()
    nearest = (tmp_path / "d.md").read_text().split("## Images nearest the threshold")[1]
    type_of = {r["path"]: r["defect_type"] for r in rows}  # the defective ones
    listed = [line.split(" | ") for line in nearest.splitlines() if line.startswith("| /")]
    assert listed
    for path, _, label, _ in listed:
        kind = type_of.get(path[2:])
        assert label == ("good" if kind is None else f"defective ({kind})" if kind else "defective")
    shown = json.loads(CliRunner().invoke(main, ["info", str(out), "--json"]).output)
    assert shown["escapes by defect type"] == [
        f"(no type): {expected['']['escapes']} of {expected['']['images']}",
        f"scratch: {scratch['escapes']} of {scratch['images']}",
    ]


def test_decisions_can_limit_one_defect_types_escapes(dataset: Path, tmp_path: Path) -> None:
    """--max-escape-rate-of: none of a type may escape, the others as the target allows;
    checked again by eval --decisions; a type no image has is refused in one line."""
    reviewed, predictions, rows = typed_review(dataset, tmp_path)
    smallest = min(r["predicted_defect_pixels"] for r in rows if r["defect_type"] == "scratch")
    limited = tmp_path / "limited.json"
    args = ["calibrate", str(predictions), "--rule", "both", "--min-area", str(smallest)]
    args += ["--max-escape-rate", "1", "--max-escape-rate-of", "scratch=0", "-o", str(limited)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    decisions = json.loads(limited.read_text())
    assert decisions["target"] == {"max_escape_rate": 1.0, "max_escape_rate_of": {"scratch": 0.0}}
    kinds = {kind["defect_type"]: kind for kind in decisions["validation"]["defect_types"]}
    assert kinds["scratch"]["escapes"] == 0
    assert "of scratch 0" in (tmp_path / "limited.md").read_text()
    held_out = ["eval", str(demo_model_path()), str(reviewed), "--precision", "fp32"]
    held_out += ["--decisions", str(limited)]
    result = CliRunner().invoke(main, [*held_out, "-q", "-o", str(tmp_path / "held")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "held" / "report.md").read_text()
    assert "The escape rate of scratch on these images, 0.0%, is within the target" in report
    # A type no image has limits nothing: refused in one line, before any scoring.
    for wrong, message in (
        (
            ["--max-escape-rate-of", "scrach=0"],
            "no defective image of type scrach; its types are scratch",
        ),
        (["--max-escape-rate-of", "scratch"], "'scratch' is not TYPE=RATE"),
        (["--max-escape-rate-of", "scratch=2"], "'2' is not in [0, 1]"),
        (["--max-escape-rate-of", "scratch=0"] * 2, "a defect type is given twice"),
    ):
        args = ["calibrate", str(predictions), *wrong, "-o", str(tmp_path / "w.json")]
        result = CliRunner().invoke(main, args)
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output
    args = [
        "calibrate",
        str(reviewed),
        "--model",
        str(demo_model_path()),
        "-o",
        str(tmp_path / "w.json"),
    ]
    result = CliRunner().invoke(main, [*args, "--max-escape-rate-of", "pit=0"])
    assert result.exit_code == 1 and f"{reviewed}: no defective image of type pit" in result.output


def test_eval_opens_its_engine_at_the_batch_a_run_would_choose(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It scored in batches of 8 whatever the device and size (see ``run.batch_choice``)."""
    from psicbatch import evaluate as evaluation
    from psicbatch.engines.spec import EngineSpec

    model = tmp_path / "m.pt"
    assert CliRunner().invoke(main, ["init", str(model), "--width", "0.125"]).exit_code == 0
    opened: list[int] = []
    real_open = evaluation.open_engine

    def open_engine(spec: EngineSpec, device: str, batch: int) -> object:
        opened.append(batch)
        return real_open(spec, device, batch)

    monkeypatch.setattr(evaluation, "open_engine", open_engine)
    for checkpoint in (model, demo_model_path()):  # 512x512 inputs, then 128x128
        evaluation.evaluate_dataset(EngineSpec(checkpoint=checkpoint), [dataset], "auto", "cpu")
    assert opened == [1, 8]
