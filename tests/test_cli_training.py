"""The training and evaluation commands, end to end on a tiny synthetic dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from psicbatch.assets import demo_model_path
from psicbatch.checkpoint import load_checkpoint
from psicbatch.cli import main

TINY = ["--width", "0.125", "--input-size", "48x48", "--seg-epochs", "2", "--cls-epochs", "2"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "synth"
    result = CliRunner().invoke(
        main, ["synth", str(out), "--count", "30", "--size", "48x48", "--defect-rate", "0.4"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_synth_writes_folder_layout(dataset: Path, tmp_path: Path) -> None:
    assert len(list((dataset / "images").glob("*.png"))) == 30
    one = CliRunner().invoke(main, ["synth", str(tmp_path / "one"), "--count", "1", "-q"])
    assert one.output.startswith(f"wrote 1 image to {tmp_path / 'one'}; next:")  # not "1 images"
    assert len(list((dataset / "masks").glob("*.png"))) == 12
    assert json.loads((dataset / "synth.json").read_text())["count"] == 30


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tmp_path_factory.mktemp("model") / "model.pt"
    result = CliRunner().invoke(main, ["train", str(dataset), "--out", str(model), "-q", *TINY])
    assert result.exit_code == 0, result.output
    assert "next: psicbatch eval" in result.output
    return model


def test_train_then_eval(dataset: Path, trained: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    model = trained
    report = tmp_path / "report"
    result = runner.invoke(main, ["eval", str(model), str(dataset), "-o", str(report), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((report / "metrics.json").read_text())
    assert summary["images"] == 30 and summary["defective_images"] == 12
    for key in ("mask_miou", "boundary_miou", "two_class_miou"):
        assert 0 <= summary["segmentation"][key] <= 1
    rows = pq.read_table(report / "predictions.parquet").to_pylist()
    assert len(rows) == 30 and {"id", "probability", "mask_iou"} <= set(rows[0])
    assert (report / "pr_curve.png").stat().st_size > 0
    assert "Mask mIoU" in (report / "report.md").read_text()
    seen = "All of these images are among the 30 images the model was trained on"
    assert seen in (report / "report.md").read_text()
    # --layout auto, the default, is recorded as the layout it found.
    assert load_checkpoint(model).training["dataset"]["layout"] == "folder"


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_evaluations_count_the_images_the_model_and_its_decisions_had_seen(
    dataset: Path, trained: Path, tmp_path: Path
) -> None:
    """A checkpoint keeps digests of its training images' files, a decision file of its
    validation images', and every evaluation (of a checkpoint, an engine or a run's
    results) counts how many of its images are among them: renamed copies included,
    since images are known by content."""
    import shutil

    from psicbatch.data.synth import generate

    mixed = tmp_path / "mixed"  # 6 new images, and 3 training images renamed
    generate(mixed, 6, (48, 48), defect_rate=0.5, seed=99)
    for image in sorted((dataset / "images").glob("*.png"))[:3]:
        shutil.copy(image, mixed / "images" / f"copy_{image.name}")
        if (dataset / "masks" / image.name).exists():
            shutil.copy(dataset / "masks" / image.name, mixed / "masks" / f"copy_{image.name}")
    shown = json.loads(_cli("info", str(trained), "--json"))
    assert shown["training"]["trained_on"] == "30 images, known by their files' content"
    # Decisions chosen on the training images themselves.
    validation, decisions = tmp_path / "validation", tmp_path / "d.json"
    _cli("eval", str(trained), str(dataset), "-o", str(validation), "-q")
    said = CliRunner().invoke(main, ["calibrate", str(validation / "predictions.parquet"),
                                     "--max-escape-rate", "1", "-o", str(decisions)])  # fmt: skip
    # Calibrated on training images: said, and kept with the decisions and their report.
    on_training = "30 of the 30 validation images are among those the model was trained on"
    assert said.exit_code == 0 and f"note: {on_training}" in said.output
    assert json.loads(decisions.read_text())["validation"]["seen_in_training"] == 30
    assert on_training in decisions.with_suffix(".md").read_text()
    by_model = "3 of these 9 images are among the 30 images the model was trained on"
    by_decisions = "3 of these 9 images are among the 30 images the decisions were chosen on"
    report = tmp_path / "report"
    _cli("eval", str(trained), str(mixed), "-o", str(report), "--decisions", str(decisions), "-q")
    for page in ("report.md", "report.html"):
        assert (
            by_model in (report / page).read_text() and by_decisions in (report / page).read_text()
        )
    overlap = json.loads((report / "metrics.json").read_text())["overlap"]
    assert overlap == {"images": 9, "training": 3, "training_total": 30, "validation": 3,
                       "validation_total": 30, "chosen": None, "chosen_total": None,
                       "chosen_for": None}  # fmt: skip
    assert json.loads(_cli("info", str(report), "--json"))["seen in training"].startswith(by_model)
    # A built engine carries the record in its manifest (every backend writes the same
    # manifest; torch's is built in a second where an ONNX export takes ten or more).
    engine = tmp_path / "engine"
    _cli("build-engine", str(trained), "--backend", "torch", "--precision", "fp32",
         "--out", str(engine))  # fmt: skip
    assert json.loads(_cli("info", str(engine), "--json"))["trained_on"].startswith("30 images")
    _cli("eval", "--engine", str(engine), str(mixed), "-o", str(tmp_path / "by-engine"), "-q")
    assert by_model in (tmp_path / "by-engine" / "report.md").read_text()
    # A run's results, scored against the labels, say the same.
    results = tmp_path / "mixed.parquet"
    _cli("run", str(mixed / "images"), "-o", str(results), "--model", str(trained),
         "--decisions", str(decisions), "--decoder", "pil", "-q")  # fmt: skip
    audit = tmp_path / "audit"
    _cli("eval", str(results), "--labels", str(mixed), "-o", str(audit), "-q")
    said = (audit / "report.md").read_text()
    assert by_model in said and by_decisions in said
    # Calibrating on those results, or on the folder scored anew, counts the same 3; the
    # results' masks are not read for it.
    from psicbatch.calibrate import StoredPredictions

    assert "mask" not in StoredPredictions.read(results).table.column_names
    for source, extra in ((results, ["--labels", str(mixed)]), (mixed, ["--model", str(trained)])):
        chosen = tmp_path / f"{source.name}.json"
        _cli("calibrate", str(source), *extra, "--max-escape-rate", "1", "-o", str(chosen), "-q")
        assert json.loads(chosen.read_text())["validation"]["seen_in_training"] == 3, source
    # New images only: none seen, and said so.
    fresh = tmp_path / "fresh"
    shutil.copytree(mixed, fresh, ignore=shutil.ignore_patterns("copy_*"))
    _cli("eval", str(trained), str(fresh), "-o", str(tmp_path / "new"), "-q")
    none = "None of these images is among the 30 images the model was trained on"
    assert none in (tmp_path / "new" / "report.md").read_text()


def test_train_notes_images_that_are_copies_of_others(dataset: Path, tmp_path: Path) -> None:
    """A copy weighs twice in training, and one labelled differently contradicts its
    original: train says so before it starts, and the checkpoint counts distinct files."""
    import shutil

    data = Path(shutil.copytree(dataset, tmp_path / "data"))
    first = sorted((data / "images").glob("*.png"))[0]
    shutil.copy(first, data / "images" / "z_again.png")  # listed after its original
    model = tmp_path / "m.pt"
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(model), *TINY])
    assert result.exit_code == 0, result.output
    assert (
        f"note: 1 of the 31 images is a byte-identical copy of another (z_again of {first.stem}): "
        "each weighs twice in training" in result.output
    )
    shown = json.loads(_cli("info", str(model), "--json"))
    assert shown["training"]["trained_on"].startswith("30 images")
    quiet = CliRunner().invoke(main, ["train", str(data), "-o", str(model), "--overwrite", "-q",
                                      *TINY])  # fmt: skip
    assert quiet.exit_code == 0 and "note:" not in quiet.output


def test_cv_reports_in_paper_layout_and_resumes(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    args = ["cv", str(dataset), "--folds", "2", "--out", str(out), "-q", *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "cv.json").read_text())
    assert len(report["folds"]) == 2
    assert set(report["tables"]["table1"]["mask_miou"]) == {"mean", "max", "min"}
    assert {"auc", "ap", "accuracy", "fp", "fn"} <= set(report["tables"]["table3"])
    splits = json.loads((out / "splits.json").read_text())
    all_ids = sorted(r["id"] for r in pq.read_table(out / "predictions.parquet").to_pylist())
    assert sorted(i for fold in splits["test_ids"] for i in fold) == all_ids
    fold_model = json.loads(
        CliRunner().invoke(main, ["info", str(out / "fold1" / "model.pt"), "--json"]).output
    )
    trained_on = 30 - len(splits["test_ids"][0])  # each fold's model knows its own images
    assert fold_model["training"]["trained_on"].startswith(f"{trained_on} images")
    assert [fold["summary"]["overlap"]["training"] for fold in report["folds"]] == [0, 0]
    assert report["joined_groups"] == []  # no two images alike
    assert "| test images seen in training |" in (out / "report.md").read_text()
    assert len(pq.read_table(out / "predictions.parquet")) == 30
    markdown = (out / "report.md").read_text()
    assert "paper Table 1 layout" in markdown and "psicbatch cv" in markdown
    scored_with = report["folds"][0]["summary"]["engine"]["precision"]  # the CPU's auto
    assert (
        "(12 defective); PSIC-Net at width 0.125, input 48x48; each fold's model scored with "
        f"torch {scored_with} on cpu. Command:"
    ) in markdown
    pages = ["fold1/evaluation/report.html", "fold2/evaluation/report.html"]
    assert report["fold_pages"] == pages and all((out / page).is_file() for page in pages)
    assert f"`{pages[1]}`" in markdown
    # The same report as a page: its tables, the pooled curves embedded, each fold's page
    # linked relative to it (the folder moves as a whole).
    page = (out / "report.html").read_text()
    assert "![pr_curve](pr_curve.png)" in markdown and (out / "pr_curve.png").is_file()
    assert page.count('<img src="data:image/png;base64,') == 2  # PR and ROC
    assert all(f'<a href="{link}">' in page for link in pages)
    assert "<h2>Classification (paper Table 3 layout, %)</h2>" in page
    assert "<th>test images seen in training</th>" in page and "<code>psicbatch cv" in page
    shown = json.loads(CliRunner().invoke(main, ["info", str(out), "--json"]).output)
    assert shown["folds"] == 2 and shown["images"] == 30
    assert shown["AP (%)"] == round(100 * report["pooled"]["classification"]["ap"], 2)
    # A rerun finds every fold finished and only rewrites the summary, also where the
    # job was recorded before an option existed (it had its default then).
    stamp = (out / "fold1" / "model.pt").stat().st_mtime_ns
    job = json.loads((out / "cv_job.json").read_text())
    del job["training"]["brightness"]
    (out / "cv_job.json").write_text(json.dumps(job))
    assert CliRunner().invoke(main, args).exit_code == 0
    assert (out / "fold1" / "model.pt").stat().st_mtime_ns == stamp
    # Another job's rerun is refused before any work, not reported with these folds.
    for change, named in (
        (["--seg-epochs", "3"], "the training options: --seg-epochs 2 there, 3 now"),
        (["--brightness", "0.2"], "the training options: --brightness 0.0 there, 0.2 now"),
        (["--folds", "3"], "the folds (--folds, --seed, the dataset's images and which are"),
    ):
        changed = [*args, *change] if change[0] != "--folds" else [*args[:2], *change, *args[4:]]
        refused = CliRunner().invoke(main, changed)
        assert refused.exit_code == 1 and f"differs in {named}" in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1
    assert (out / "fold1" / "model.pt").stat().st_mtime_ns == stamp


def test_cv_runs_a_single_fold_with_the_mask_study_options(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "one-fold"
    args = [
        "cv",
        str(dataset),
        "--folds",
        "3",
        "--fold",
        "2",
        "--out",
        str(out),
        "-q",
        "--alpha-cap",
        "0.9",
        "--pixel-threshold",
        "iou",
        "--dice-weight",
        "0.5",
        *TINY,
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "cv.json").read_text())
    assert [fold["fold"] for fold in report["folds"]] == [2]
    assert report["options"]["alpha_cap"] == 0.9 and report["options"]["pixel_threshold"] == "iou"
    assert report["options"]["dice_weight"] == 0.5
    assert not (out / "fold1").exists() and (out / "fold2" / "model.pt").exists()
    assert "mask_miou_gated" in report["tables"]["table1"]
    bad = CliRunner().invoke(main, [*args[:4], "--fold", "4", *args[6:]])
    assert bad.exit_code == 1 and "--fold must be between 1 and 3" in bad.output


@pytest.mark.slow  # the ONNX export alone takes about 8 s on 2 cores
def test_cv_scores_each_fold_with_the_engine_it_names(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    args = ["cv", str(dataset), "--folds", "2", "--fold", "1", "-o", str(out), "-q", *TINY]
    scoring = ["--engine-backend", "onnxruntime", "--engine-precision", "fp32"]
    result = CliRunner().invoke(main, [*args, *scoring])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "fold1" / "engine" / "manifest.json").read_text())
    assert (manifest["backend"], manifest["precision"]) == ("onnxruntime", "fp32")
    engine = json.loads((out / "cv.json").read_text())["folds"][0]["summary"]["engine"]
    assert (engine["backend"], engine["precision"]) == ("onnxruntime", "fp32")
    assert engine["engine_sha256"] == manifest["engine_sha256"]  # the engine built, scored
    assert "each fold's model scored with onnxruntime fp32 on cpu" in result.output


@pytest.mark.parametrize(
    ("scoring", "refusal"),
    [
        (["--engine-precision", "int8"], "int8 engines need calibration images"),
        (
            ["--engine-backend", "onnxruntime", "--engine-precision", "bf16"],
            "--engine-precision bf16 is not available with the onnxruntime engine on cpu; "
            "choose auto or fp32",
        ),
        (
            ["--engine-precision", "fp16"],
            "--engine-precision fp16 is not available with the torch engine on cpu; "
            "choose auto or bf16, fp32",
        ),
    ],
)
def test_cv_refuses_an_engine_it_cannot_score_with_before_any_fold_trains(
    dataset: Path, tmp_path: Path, scoring: list[str], refusal: str
) -> None:
    out = tmp_path / "cv"
    args = ["cv", str(dataset), "--folds", "2", "-o", str(out), "--device", "cpu", *TINY]
    result = CliRunner().invoke(main, [*args, *scoring])
    assert result.exit_code == 1 and refusal in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()  # no fold trained, nothing written


def test_cv_names_a_backend_missing_or_on_another_device_by_its_own_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from psicbatch.crossval import FoldEngine
    from psicbatch.engines.registry import BACKENDS, Backend
    from psicbatch.errors import PsicbatchError

    tensorrt = FoldEngine("tensorrt", "fp16")
    monkeypatch.setattr(Backend, "installed", lambda entry: entry.name != "tensorrt")
    assert BACKENDS["tensorrt"].problem() == "not installed (pip install 'psicbatch[tensorrt]')"
    with pytest.raises(PsicbatchError, match=r"^--engine-backend tensorrt is not installed \("):
        tensorrt.check("cuda:0")
    monkeypatch.setattr(Backend, "problem", lambda entry: None)  # as where it loads
    tensorrt.check("cuda:0")
    with pytest.raises(PsicbatchError, match="tensorrt runs on cuda; the folds train and are"):
        tensorrt.check("cpu")
    FoldEngine("onnxruntime", "fp32").check("cuda:1")  # a GPU provider
    FoldEngine("openvino", "fp32").check("cuda:0")  # a CPU runtime: scores on the CPU


def test_cv_of_a_review_sorted_by_type_reports_each_types_escapes(
    dataset: Path, tmp_path: Path
) -> None:
    """cv on the classes layout, some defective images without masks: the pooled report
    has a row per defect type, and masks are scored where they are known."""
    import numpy as np
    from PIL import Image

    review = tmp_path / "review"
    for folder in ("good", "defective/crack", "defective/pit", "masks"):
        (review / folder).mkdir(parents=True)
    for number, image in enumerate(sorted((dataset / "images").glob("*.png"))):
        mask = dataset / "masks" / image.name
        if not mask.exists() or not np.asarray(Image.open(mask)).any():
            (review / "good" / image.name).symlink_to(image)
            continue
        kind = ("crack", "pit")[number % 2]
        (review / "defective" / kind / image.name).symlink_to(image)
        if number % 3:  # the others teach the decision only
            (review / "masks" / image.name).symlink_to(mask)
    out = tmp_path / "cv"
    result = CliRunner().invoke(
        main, ["cv", str(review), "--folds", "2", "-o", str(out), "-q", *TINY]
    )
    assert result.exit_code == 0, result.output
    pooled = json.loads((out / "cv.json").read_text())["pooled"]
    kinds = {kind["defect_type"]: kind for kind in pooled["defect_types"]}
    assert set(kinds) == {"crack", "pit"}
    assert sum(kind["images"] for kind in kinds.values()) == pooled["defective_images"]
    assert sum(kind["escapes"] for kind in kinds.values()) == pooled["classification"]["fn"]
    unmasked = sum(
        1 for f in (review / "defective").rglob("*.png") if not (review / "masks" / f.name).exists()
    )
    assert pooled["unmasked_defective"] == unmasked > 0
    assert (
        sum(kind["with_masks"] for kind in kinds.values()) == pooled["defective_images"] - unmasked
    )
    for page in ("report.md", "report.html"):
        text = (out / page).read_text()
        assert "Defective images by type (pooled over folds)" in text
        assert "crack" in text and "pit" in text


def test_cv_refuses_folds_whose_training_images_have_no_mask(dataset: Path, tmp_path: Path) -> None:
    """One defective image with a mask: the fold testing it could learn no mask; refused
    before any fold trains."""
    import numpy as np
    from PIL import Image

    review = tmp_path / "review"
    for folder in ("good", "defective", "masks"):
        (review / folder).mkdir(parents=True)
    masked = False
    for image in sorted((dataset / "images").glob("*.png")):
        mask = dataset / "masks" / image.name
        if not mask.exists() or not np.asarray(Image.open(mask)).any():
            (review / "good" / image.name).symlink_to(image)
            continue
        (review / "defective" / image.name).symlink_to(image)
        if not masked:
            (review / "masks" / image.name).symlink_to(mask)
            masked = True
    out = tmp_path / "cv"
    result = CliRunner().invoke(main, ["cv", str(review), "--folds", "2", "-o", str(out), *TINY])
    assert result.exit_code == 1, result.output
    assert "no defective training image has a mask" in result.output
    assert "\nError: fold " in result.output
    assert not list(out.glob("fold*"))


def test_cv_keeps_the_images_a_pattern_groups_in_one_fold(dataset: Path, tmp_path: Path) -> None:
    """--group-by: images whose ids share the match go to one fold (here by their number's
    tens: synth_0001x together), the report says so and counts escapes in those parts,
    and a rerun with another pattern is refused rather than resumed."""
    out = tmp_path / "cv"
    args = ["cv", str(dataset), "--folds", "2", "-o", str(out), "-q", *TINY]
    pattern = r"synth_000(\d)\d"
    result = CliRunner().invoke(main, [*args, "--group-by", pattern])
    assert result.exit_code == 0, result.output
    folds = json.loads((out / "splits.json").read_text())["test_ids"]
    tens = [{sample_id[-2] for sample_id in fold} for fold in folds]
    assert tens[0].isdisjoint(tens[1]) and tens[0] | tens[1] == {"0", "1", "2"}
    report = (out / "report.md").read_text()
    assert "are kept in one fold: 3 groups" in report
    parts = json.loads((out / "cv.json").read_text())["pooled"]["parts"]  # pooled over folds
    assert (parts["parts"], parts["largest"]) == (3, 10)
    assert "Escapes and false rejects in parts (pooled over folds)" in report
    assert f"3 parts of up to 10 images (--group-by {pattern})" in report
    assert "All are defective: no ranking of parts to score." in report
    assert math.isnan(parts["auc"]) and math.isnan(parts["ap"])  # not AP 1 of a trivial order
    calibrate = ["calibrate", str(out / "predictions.parquet"), "--per-part"]
    refused = CliRunner().invoke(main, calibrate)  # every one of the 3 parts is defective
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "hold no defect-free part: a false-reject rate cannot be estimated" in refused.output
    again = CliRunner().invoke(main, [*args, "--group-by", r"synth_0000(\d)"])
    assert again.exit_code == 1 and "Traceback" not in again.output
    assert (
        "differs in the dataset (DATA, --layout, --split, --channels, --group-by)" in again.output
    )


def test_train_on_missing_folder_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", str(tmp_path / "nope"), "--out", "m.pt"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path / 'nope'}: not a folder"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--width", "0"),
        ("--width", "-1"),
        ("--width", "nan"),
        ("--batch-size", "0"),
        ("--input-size", "7x7"),
        ("--input-size", "0x0"),
        ("--input-size", "100x100"),  # not a multiple of 8
        ("--seg-lr", "inf"),
        ("--dice-weight", "nan"),
        ("--brightness", "1"),  # a gain of 0: black images
        ("--brightness", "-0.1"),
    ],
)
def test_impossible_training_options_are_refused_before_any_data_is_read(
    tmp_path: Path, option: str, value: str
) -> None:
    # The data folder does not exist: a usage error (2) proves nothing was read first.
    result = CliRunner().invoke(
        main, ["train", str(tmp_path / "no-data"), "--out", str(tmp_path / "m.pt"), option, value]
    )
    assert result.exit_code == 2, result.output
    assert option in result.output


@pytest.mark.parametrize("command", ["train", "cv"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--seg-epochs", "0", "--cls-epochs", "0"], "--seg-epochs 0 leaves the segmentation"),
        (["--seg-epochs", "0"], "--seg-epochs 0 leaves the segmentation network's weights"),
        (["--cls-epochs", "0"], "--cls-epochs 0 leaves the classification layers' weights"),
        (["--mode", "end-to-end", "--seg-epochs", "0"], "--seg-epochs 0 trains nothing"),
        (["--mode", "end-to-end", "--cls-epochs", "5"], "--cls-epochs set step 2 of two-step"),
        (["--mode", "end-to-end", "--cls-lr", "0.1"], "--cls-lr set step 2 of two-step"),
    ],
)
def test_epochs_that_leave_weights_random_and_options_no_phase_reads_are_refused(
    tmp_path: Path, command: str, options: list[str], message: str
) -> None:
    """Without --init such a model would write noise, under the name of a trained one
    (--init with no epochs keeps the starting weights: tests/test_fine_tuning.py)."""
    # The data folder does not exist: the refusal comes before anything is read.
    args = [command, str(tmp_path / "no-data"), "--out", str(tmp_path / "m"), *options]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {message}")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def _folder_dataset(root: Path, count: int, mask_size: tuple[int, int] | None = None) -> Path:
    import numpy as np
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        Image.fromarray(np.full((48, 64), 100, np.uint8)).save(root / "images" / f"{i}.png")
    if mask_size is not None:
        mask = np.zeros(mask_size, np.uint8)
        mask[5:9, 5:9] = 255
        Image.fromarray(mask).save(root / "masks" / "0.png")
    return root


def test_training_needs_two_images(tmp_path: Path) -> None:
    data = _folder_dataset(tmp_path / "one", 1)
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "m.pt"), *TINY])
    assert result.exit_code == 1 and "at least 2" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_training_without_a_defective_image_is_refused_before_loading(tmp_path: Path) -> None:
    data = _folder_dataset(tmp_path / "good", 3)  # no masks: every image defect-free
    result = CliRunner().invoke(main, ["train", str(data), "--out", str(tmp_path / "m.pt"), *TINY])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {data}: none of its 3 labelled images is defective; training needs at least "
        "one (a mask marking defect pixels, or for a review's sorting an image in defective/)"
    ]


def test_masks_of_another_size_than_their_image_are_refused(tmp_path: Path) -> None:
    data = _folder_dataset(tmp_path / "data", 4, mask_size=(24, 32))  # half the image
    for command in (
        ["train", "--out", str(tmp_path / "m.pt"), *TINY],
        ["eval", str(demo_model_path())],
    ):
        args = (
            [command[0], *command[1:], str(data)]
            if command[0] == "train"
            else [*command, str(data)]
        )
        result = CliRunner().invoke(main, [*args, "-q"])
        assert result.exit_code == 1, result.output
        message = result.output.strip()
        assert "0.png: mask is 32x24" in message and "is 64x48" in message
        assert len(message.splitlines()) == 1


def test_the_input_size_follows_the_images_by_default(tmp_path: Path) -> None:
    """Without --input-size, the network takes the images' own shape: here 40x104 images
    stay 40x104 (never stretched to a square), and the choice is said and recorded."""
    from psicbatch.data.synth import generate

    data, model = tmp_path / "tall", tmp_path / "m.pt"
    generate(data, 8, (40, 104), defect_rate=0.5, seed=3)
    epochs = ["--width", "0.0625", "--seg-epochs", "1", "--cls-epochs", "1"]
    said = _cli("train", str(data), "--out", str(model), *epochs)
    chosen = "40x104 (auto: the images' median size 40x104, as it is, aspect ratio kept)"
    assert f"note: input size {chosen}" in said
    shown = json.loads(_cli("info", str(model), "--json"))
    assert shown["input_size"] == "40x104" and shown["training"]["input_size"] == chosen
    cv = tmp_path / "cv"  # cv says the size too: its command does not
    _cli("cv", str(data), "--folds", "2", "-o", str(cv), "-q", *epochs)
    assert f"PSIC-Net at width 0.0625, input {chosen}; each" in (cv / "report.md").read_text()
