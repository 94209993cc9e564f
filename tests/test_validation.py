"""``train --validation``: every epoch scored on held-out images, by its phase's own loss
and (for the image decision) the paper's AP, without changing the model."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import psicbatch.train as train_module
from psicbatch.checkpoint import Checkpoint
from psicbatch.cli import main
from psicbatch.data.memory import TensorDataset
from psicbatch.data.synth import generate
from psicbatch.errors import PsicbatchError
from psicbatch.memory_inference import predict_batches
from psicbatch.metrics import average_precision
from psicbatch.pixel_threshold import HISTOGRAM_BINS
from psicbatch.train import Trainer, best_path, partial_path
from psicbatch.train_options import TrainOptions
from psicbatch.validation import EpochValidation, best_epoch, best_epochs
from tests.test_train import TINY, synthetic

OPTIONS = TrainOptions(**{**TINY.__dict__, "seg_epochs": 4, "cls_epochs": 3})


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[TensorDataset, TensorDataset]:
    root = tmp_path_factory.mktemp("held-out")
    return synthetic(root, "train", 40, seed=1), synthetic(root, "validation", 24, seed=2)


def test_every_epoch_is_scored_on_the_held_out_images_and_the_model_is_unchanged(
    tmp_path: Path, data: tuple[TensorDataset, TensorDataset]
) -> None:
    train, held_out = data
    plain = Trainer(train, OPTIONS, tmp_path / "plain.pt").run()
    scored = Trainer(train, OPTIONS, tmp_path / "scored.pt", validation=held_out).run()
    for name, tensor in plain.state_dict.items():
        assert torch.equal(tensor, scored.state_dict[name]), name
    assert scored.training["loss_history"] == plain.training["loss_history"]
    history = scored.training["validation_history"]
    assert {
        phase: {m: len(v) for m, v in measures.items()} for phase, measures in history.items()
    } == {
        "segmentation": {"loss": 4},
        "classification": {"loss": 3, "ap": 3},
    }
    assert all(
        math.isfinite(v) for measures in history.values() for vs in measures.values() for v in vs
    )
    # The last scores are the final model's on the held-out images, worked out again here.
    model, precision = scored.build_model(), scored.training["precision"]["precision"]
    check = EpochValidation(held_out, OPTIONS, torch.device("cpu"), precision)
    again = check.segmentation(model, scored.preprocessing)["loss"]
    assert again == pytest.approx(history["segmentation"]["loss"][-1], rel=2e-2)
    (_, probabilities, _), *_ = predict_batches(
        model, held_out.images, scored.preprocessing, 64, torch.device("cpu"), precision
    )
    ap = average_precision(held_out.labels.numpy(), probabilities.numpy())
    assert ap == pytest.approx(history["classification"]["ap"][-1], abs=0.02)
    assert ap != pytest.approx(  # not the training images' AP
        average_precision(
            train.labels.numpy(),
            next(predict_batches(model, train.images, scored.preprocessing, 64,
                                 torch.device("cpu"), precision))[1].numpy(),
        ),
        abs=1e-6,
    )  # fmt: skip


def test_end_to_end_epochs_are_scored_by_eq_1_and_the_ap(
    tmp_path: Path, data: tuple[TensorDataset, TensorDataset]
) -> None:
    options = TrainOptions(**{**TINY.__dict__, "mode": "end-to-end", "seg_epochs": 2})
    checkpoint = Trainer(data[0], options, tmp_path / "e2e.pt", validation=data[1]).run()
    history = checkpoint.training["validation_history"]
    assert list(history) == ["end-to-end"] and list(history["end-to-end"]) == ["loss", "ap"]
    assert all(len(values) == 2 for values in history["end-to-end"].values())


def test_best_epochs_are_said_in_words() -> None:
    said = best_epochs(
        {
            "segmentation": {"loss": [0.5, 0.3, 0.4]},
            "classification": {"loss": [0.9, 0.8], "ap": [0.9, 0.95]},
        }
    )
    assert said == [
        "segmentation loss lowest at epoch 2 of 3 (0.3; last 0.4)",
        "classification loss lowest at its last epoch, 2 (0.8)",
        "classification AP highest at its last epoch, 2 (95.00)",
    ]


def test_a_resumed_training_scores_as_an_uninterrupted_one_and_keeps_its_held_out_images(
    tmp_path: Path, data: tuple[TensorDataset, TensorDataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    train, held_out = data
    record = {"validation": {"path": "validation", "images": 24}}
    straight = Trainer(
        train, OPTIONS, tmp_path / "straight.pt", metadata=record, validation=held_out
    ).run()
    real_save, saves = train_module.save_checkpoint, []

    def stop_at_the_sixth(checkpoint: object, path: Path) -> object:
        saves.append(path)
        if len(saves) == 6:  # during classification
            raise KeyboardInterrupt
        return real_save(checkpoint, path)

    out = tmp_path / "resumed.pt"
    monkeypatch.setattr(train_module, "save_checkpoint", stop_at_the_sixth)
    with pytest.raises(KeyboardInterrupt):
        Trainer(train, OPTIONS, out, metadata=record, validation=held_out).run()
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    with pytest.raises(PsicbatchError, match="other validation images, or none"):
        Trainer(train, OPTIONS, out).run(resume=True)
    assert partial_path(out).exists()
    resumed = Trainer(train, OPTIONS, out, metadata=record, validation=held_out).run(resume=True)
    assert resumed.training["validation_history"] == straight.training["validation_history"]


def test_train_validation_on_the_command_line(tmp_path: Path) -> None:
    generate(tmp_path / "train", 24, (64, 64), defect_rate=0.4, seed=1)
    generate(tmp_path / "held", 12, (64, 64), defect_rate=0.4, seed=2)
    out = tmp_path / "m.pt"
    args = ["train", str(tmp_path / "train"), "--out", str(out), "--width", "0.125"]
    args += ["--seg-epochs", "2", "--cls-epochs", "2", "--validation", str(tmp_path / "held")]
    trained = CliRunner().invoke(main, args)
    assert trained.exit_code == 0, trained.output
    assert "validation: segmentation loss lowest at " in trained.output
    assert "validation: classification AP highest at " in trained.output
    shown = json.loads(CliRunner().invoke(main, ["info", str(out), "--json"]).output)
    assert shown["validation"] == f"{tmp_path / 'held'} (12 images)"
    assert shown["validation classification AP by epoch"].count(" ") == 2  # first, bars, last
    assert shown["training"]["validation_minutes"] >= 0  # apart from the training's minutes
    copied = tmp_path / "copied"  # the training images held out again: said so
    shutil.copytree(tmp_path / "train", copied)
    again = CliRunner().invoke(main, [*args[:-1], str(copied), "--overwrite"])
    assert again.exit_code == 0, again.output
    said = "note: of the 24 validation images, 24 are byte-identical to training images: "
    assert said in " ".join(again.output.split())
    fine_tuned = [*args[:3], str(tmp_path / "m2.pt"), "--init", str(out)]  # from m.pt
    onwards = CliRunner().invoke(main, [*fine_tuned, *args[6:-1], str(copied)])
    assert onwards.exit_code == 0, onwards.output
    said = "24 are byte-identical to training images, 24 are among those the starting checkpoint"
    assert said in " ".join(onwards.output.split())
    good = tmp_path / "good"  # without a defective image: nothing to score decisions on
    generate(good, 4, (64, 64), defect_rate=0.0, seed=3)
    refused = CliRunner().invoke(main, [*args[:-1], str(good), "--overwrite"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert f"Error: {good}: none of its 4 labelled images is defective" in refused.output


def test_cv_scores_each_folds_epochs_on_its_test_images(tmp_path: Path) -> None:
    generate(tmp_path / "data", 24, (48, 48), defect_rate=0.4, seed=5)
    out = tmp_path / "cv"
    tiny = ["--width", "0.125", "--input-size", "48x48", "--seg-epochs", "2", "--cls-epochs", "2"]
    args = ["cv", str(tmp_path / "data"), "--folds", "2", "--out", str(out), "-q", *tiny]
    scored = CliRunner().invoke(main, [*args, "--score-epochs"])
    assert scored.exit_code == 0, scored.output
    report = json.loads((out / "cv.json").read_text())
    for fold in report["folds"]:
        assert fold["best_epochs"][0].startswith("segmentation loss lowest at ")
        model = json.loads(
            CliRunner().invoke(main, ["info", str(out / f"fold{fold['fold']}" / "model.pt"),
                                      "--json"]).output
        )  # fmt: skip
        assert (
            model["validation"]
            == f"fold {fold['fold']}'s test images ({fold['test_images']} images)"
        )
    markdown = (out / "report.md").read_text()
    assert "Best epochs on each fold's test images (--score-epochs)" in markdown
    assert "Fold 2: segmentation loss lowest at " in markdown
    refused = CliRunner().invoke(main, args)  # the folds were scored: another job
    assert refused.exit_code == 1, refused.output
    said = "differs in whether every epoch was scored on the folds' test images (--score-epochs)"
    assert said in " ".join(refused.output.split())


def test_the_best_epoch_is_the_lowest_loss_or_the_highest_ap_with_ties_broken_by_phase() -> None:
    assert best_epoch("segmentation", {"loss": [0.5, 0.3, 0.3, 0.4]}) == 2  # earlier of equals
    assert best_epoch("segmentation", {"loss": [math.nan, 0.6, math.inf]}) == 2
    assert best_epoch("segmentation", {"loss": [math.nan, math.nan]}) is None
    assert best_epoch("segmentation", {}) is None
    step_2 = {"loss": [0.9, 0.5, 0.4, 0.3], "ap": [0.8, 1.0, 1.0, 0.9]}
    assert best_epoch("classification", step_2) == 3  # AP 1 twice: the lower loss
    assert best_epoch("end-to-end", step_2) == 3  # AP 1 twice: the later epoch
    assert best_epoch("end-to-end", {"loss": [0.9, 0.5], "ap": [0.9, math.nan]}) == 1


def test_keep_best_ends_each_phase_with_the_weights_of_its_chosen_epoch(
    tmp_path: Path, data: tuple[TensorDataset, TensorDataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the best epochs fixed (segmentation 2 of 4, classification 1 of 3), the model
    ends with the segmentation weights a plain training had after its epoch 2, and step 2
    learns from those: its weights are those of its own epoch 1."""
    train, held_out = data
    real_save, saved = train_module.save_checkpoint, []

    def recording(checkpoint: Checkpoint, path: Path) -> Path:
        if path.name.endswith(".pt.partial"):
            saved.append((path.stem, dict(checkpoint.training["epochs_done"]), checkpoint))
        return real_save(checkpoint, path)

    monkeypatch.setattr(train_module, "save_checkpoint", recording)
    plain = Trainer(train, OPTIONS, tmp_path / "plain.pt", validation=held_out).run()
    fixed = {"segmentation": 2, "classification": 1}
    monkeypatch.setattr(train_module, "best_epoch", lambda phase, measures: fixed[phase])
    keep_best = replace(OPTIONS, keep="best")
    best = Trainer(train, keep_best, tmp_path / "best.pt", validation=held_out).run()
    assert best.training["kept_epochs"] == fixed
    assert not best_path(tmp_path / "best.pt").exists()

    def saved_at(stem: str, epochs_done: dict[str, int]) -> dict[str, torch.Tensor]:
        return next(c.state_dict for s, done, c in saved if s == stem and done == epochs_done)

    plain_epoch_2 = saved_at("plain.pt", {"segmentation": 2})
    own_epoch_1 = saved_at("best.pt", {"segmentation": 4, "classification": 1})
    for name, tensor in best.state_dict.items():
        assert torch.equal(tensor, own_epoch_1[name]), name
        if not name.startswith("classifier."):
            assert torch.equal(tensor, plain_epoch_2[name]), name
    changed = [n for n, t in plain.state_dict.items() if not torch.equal(t, best.state_dict[n])]
    assert any(not name.startswith("classifier.") for name in changed)  # not epoch 4's
    history = best.training["validation_history"]
    assert history["segmentation"] == plain.training["validation_history"]["segmentation"]


def test_keep_best_keeps_the_epochs_scoring_best_and_scores_the_model_as_they_scored(
    tmp_path: Path, data: tuple[TensorDataset, TensorDataset]
) -> None:
    train, held_out = data
    checkpoint = Trainer(
        train, replace(OPTIONS, keep="best"), tmp_path / "m.pt", validation=held_out
    ).run()
    history = checkpoint.training["validation_history"]
    kept = checkpoint.training["kept_epochs"]
    assert kept == {phase: best_epoch(phase, measures) for phase, measures in history.items()}
    model, precision = checkpoint.build_model(), checkpoint.training["precision"]["precision"]
    check = EpochValidation(held_out, OPTIONS, torch.device("cpu"), precision)
    again = check.segmentation(model, checkpoint.preprocessing)["loss"]
    assert again == pytest.approx(
        history["segmentation"]["loss"][kept["segmentation"] - 1], rel=2e-2
    )
    (_, probabilities, _), *_ = predict_batches(
        model, held_out.images, checkpoint.preprocessing, 64, torch.device("cpu"), precision
    )
    ap = average_precision(held_out.labels.numpy(), probabilities.numpy())
    assert ap == pytest.approx(
        history["classification"]["ap"][kept["classification"] - 1], abs=0.02
    )
    with pytest.raises(PsicbatchError, match="--keep best needs --validation"):
        Trainer(train, replace(OPTIONS, keep="best"), tmp_path / "n.pt")
    with pytest.raises(PsicbatchError, match="--keep must be one of last, best"):
        replace(OPTIONS, keep="first")


@pytest.mark.parametrize(
    "stride",
    [3, pytest.param(1, marks=pytest.mark.slow)],  # slow: every save point (25 trainings)
)
def test_keep_best_stopped_at_any_save_and_resumed_gives_the_uninterrupted_model(
    tmp_path: Path,
    data: tuple[TensorDataset, TensorDataset],
    monkeypatch: pytest.MonkeyPatch,
    stride: int,
) -> None:
    # Save points 1, 1 + stride, ... are tried, each a training stopped there and one
    # resumed: by default an epoch's partial, a best epoch held, a phase's end and a
    # partial after the kept epoch (12 saves, in the order training makes them); fewer
    # images than the other tests, since what is checked is only that both end alike.
    train, held_out = data[0].subset(list(range(16))), data[1].subset(list(range(12)))
    options = replace(OPTIONS, seg_epochs=3, cls_epochs=2, keep="best")
    straight = Trainer(train, options, tmp_path / "straight.pt", validation=held_out).run()
    # A phase keeps an epoch before its last: a resume must reload that epoch's weights.
    assert straight.training["kept_epochs"] != straight.training["epochs_done"]
    real_save, saves = train_module.save_checkpoint, []

    def stop_at(count: int) -> Callable[[Checkpoint, Path], Path]:
        def save(checkpoint: Checkpoint, path: Path) -> Path:
            saves.append(path)
            if len(saves) == count:
                raise KeyboardInterrupt
            return real_save(checkpoint, path)

        return save

    stop = 1
    while True:
        out, saves[:] = tmp_path / f"stopped-{stop}.pt", []
        monkeypatch.setattr(train_module, "save_checkpoint", stop_at(stop))
        try:
            Trainer(train, options, out, validation=held_out).run()
            break  # it saved fewer times: every point has been tried
        except KeyboardInterrupt:
            pass
        monkeypatch.setattr(train_module, "save_checkpoint", real_save)
        resume = partial_path(out).exists()
        resumed = Trainer(train, options, out, validation=held_out).run(resume=resume)
        assert resumed.training["kept_epochs"] == straight.training["kept_epochs"], stop
        for name, tensor in straight.state_dict.items():
            assert torch.equal(tensor, resumed.state_dict[name]), (stop, name)
        assert not best_path(out).exists()
        stop += stride
    assert stop > 12  # each epoch's partial, the best epochs held, each phase's end, the model


def test_a_resume_without_the_best_epochs_weights_is_refused_in_one_line(
    tmp_path: Path, data: tuple[TensorDataset, TensorDataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    train, held_out = data
    options, out = replace(OPTIONS, keep="best"), tmp_path / "m.pt"
    monkeypatch.setattr(train_module, "best_epoch", lambda phase, measures: 1)
    real_save = train_module.save_checkpoint

    def stop_after_the_last_epoch(checkpoint: Checkpoint, path: Path) -> Path:
        saved = real_save(checkpoint, path)
        if checkpoint.training["epochs_done"] == {"segmentation": OPTIONS.seg_epochs}:
            raise KeyboardInterrupt  # before the phase ends with its best epoch's weights
        return saved

    monkeypatch.setattr(train_module, "save_checkpoint", stop_after_the_last_epoch)
    with pytest.raises(KeyboardInterrupt):
        Trainer(train, options, out, validation=held_out).run()
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    best_path(out).unlink()
    with pytest.raises(PsicbatchError) as refused:
        Trainer(train, options, out, validation=held_out).run(resume=True)
    said = f"{best_path(out)}: is gone, and with it segmentation epoch 1, the best (rerun without"
    assert said in str(refused.value)


def test_thresholds_on_validation_are_those_the_held_out_images_give_the_same_weights(
    tmp_path: Path, data: tuple[TensorDataset, TensorDataset]
) -> None:
    train, held_out = data
    on_training = Trainer(train, OPTIONS, tmp_path / "a.pt", validation=held_out).run()
    options = replace(OPTIONS, thresholds_on="validation")
    on_validation = Trainer(train, options, tmp_path / "b.pt", validation=held_out).run()
    for name, tensor in on_training.state_dict.items():
        assert torch.equal(tensor, on_validation.state_dict[name]), name
    # The held-out images' thresholds for this model, as a training on them chooses them.
    as_if_trained_on_them = Trainer(held_out, OPTIONS, tmp_path / "c.pt")
    model = on_validation.build_model()
    expected = as_if_trained_on_them._choose_thresholds(model, on_validation.preprocessing)
    # The same model in another memory layout: its probabilities may differ in the last bits.
    chosen = on_validation.thresholds
    assert chosen.classification == pytest.approx(expected.classification, abs=1e-5)
    assert chosen.segmentation == pytest.approx(expected.segmentation, abs=1.5 / HISTOGRAM_BINS)
    assert on_validation.thresholds.classification != on_training.thresholds.classification
    assert on_validation.thresholds.segmentation != on_training.thresholds.segmentation
    assert on_validation.training["options"]["thresholds_on"] == "validation"
    with pytest.raises(PsicbatchError, match="--thresholds-on validation needs --validation"):
        Trainer(train, options, tmp_path / "d.pt")


def test_keep_best_and_thresholds_on_validation_on_the_command_line(tmp_path: Path) -> None:
    generate(tmp_path / "train", 24, (64, 64), defect_rate=0.4, seed=1)
    generate(tmp_path / "held", 12, (64, 64), defect_rate=0.4, seed=2)
    out = tmp_path / "m.pt"
    args = ["train", str(tmp_path / "train"), "--out", str(out), "--width", "0.125"]
    args += ["--seg-epochs", "3", "--cls-epochs", "2"]
    for option, said in (
        (["--keep", "best"], "--keep best needs --validation: each phase keeps"),
        (["--thresholds-on", "validation"], "--thresholds-on validation needs --validation"),
    ):
        refused = CliRunner().invoke(main, [*args, *option])
        assert refused.exit_code == 1 and "Traceback" not in refused.output
        assert f"Error: {said}" in refused.output
    assert not out.exists()
    args += ["--keep", "best", "--thresholds-on", "validation"]
    trained = CliRunner().invoke(main, [*args, "--validation", str(tmp_path / "held")])
    assert trained.exit_code == 0, trained.output
    shown = json.loads(CliRunner().invoke(main, ["info", str(out), "--json"]).output)
    kept = shown["training"]["kept_epochs"]
    assert set(kept) == {"segmentation", "classification"}
    said = (
        rf"validation: kept segmentation epoch {kept['segmentation']} of 3 \(loss [0-9.e-]+\), "
        rf"classification epoch {kept['classification']} of 2 \(AP [0-9.]+, loss [0-9.e-]+\) "
        r"\(--keep best\)"
    )
    output = " ".join(trained.output.split())
    assert re.search(said, output), output
    assert "on the validation images); next: psicbatch eval" in output
    assert shown["training"]["thresholds_on"] == "validation"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["held", "m.pt", "train"]
    reviewed = tmp_path / "reviewed"  # sorted by a review: defective images without masks
    for image in sorted((tmp_path / "held" / "images").glob("*.png")):
        defective = (tmp_path / "held" / "masks" / image.name).exists()
        folder = reviewed / ("defective" if defective else "good")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / image.name)
    unmasked = CliRunner().invoke(main, [*args, "--validation", str(reviewed), "--overwrite"])
    assert unmasked.exit_code == 1 and "Traceback" not in unmasked.output
    said = f"Error: {reviewed}: no defective image has a mask; --thresholds-on validation"
    assert said in " ".join(unmasked.output.split())


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def chosen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A training's images, held-out images that chose its kept epochs (``--keep best``),
    and a folder of 4 new images and 3 of the held-out ones renamed."""
    root = tmp_path_factory.mktemp("chosen")
    generate(root / "train", 24, (48, 48), defect_rate=0.4, seed=1)
    generate(root / "held", 12, (48, 48), defect_rate=0.4, seed=2)
    mixed = root / "mixed"
    generate(mixed, 4, (48, 48), defect_rate=0.5, seed=3)
    for image in sorted((root / "held" / "images").glob("*.png"))[:3]:
        shutil.copy(image, mixed / "images" / f"copy_{image.name}")
        if (mask := root / "held" / "masks" / image.name).exists():
            shutil.copy(mask, mixed / "masks" / f"copy_{image.name}")
    model = root / "m.pt"
    _cli("train", str(root / "train"), "--out", str(model), *CHOSEN_EPOCHS, "-q",
         "--validation", str(root / "held"), "--keep", "best")  # fmt: skip
    return {"train": root / "train", "held": root / "held", "mixed": mixed, "model": model}


CHOSEN_EPOCHS = ["--width", "0.125", "--seg-epochs", "1", "--cls-epochs", "1"]


def test_evaluations_count_the_held_out_images_that_chose_the_model(
    chosen: dict[str, Path], tmp_path: Path
) -> None:
    """Held-out images that chose a model's kept epochs or thresholds are no longer new to
    it: an evaluation, an engine's run results scored later and a calibration say how
    many of their images those were."""
    model, mixed = chosen["model"], chosen["mixed"]
    info = json.loads(_cli("info", str(model), "--json"))["training"]
    chose = "the model's kept epochs"
    assert info["chosen_on"] == f"{chose}: 12 held-out images, known by their files' content"
    said = f"3 of these 7 images are among the 12 images that chose {chose}: the figures overstate"
    report = tmp_path / "report"
    _cli("eval", str(model), str(mixed), "-o", str(report), "-q")
    overlap = json.loads((report / "metrics.json").read_text())["overlap"]
    assert (overlap["chosen"], overlap["chosen_total"], overlap["chosen_for"]) == (3, 12, chose)
    assert overlap["training"] == 0
    for page in ("report.md", "report.html"):
        assert said in " ".join(html.unescape((report / page).read_text()).split())
    shown = json.loads(_cli("info", str(report), "--json"))
    assert shown["seen in choosing the model"].startswith(said)
    # An engine built from it, a run's results scored against the labels, and a
    # calibration on them say the same.
    engine = tmp_path / "engine"
    _cli("build-engine", str(model), "--backend", "torch", "--precision", "fp32",
         "--out", str(engine))  # fmt: skip
    assert json.loads(_cli("info", str(engine), "--json"))["chosen_on"] == info["chosen_on"]
    results = tmp_path / "mixed.parquet"
    _cli("run", str(mixed / "images"), "-o", str(results), "--engine", str(engine),
         "--decoder", "pil", "-q")  # fmt: skip
    _cli("eval", str(results), "--labels", str(mixed), "-o", str(tmp_path / "audit"), "-q")
    assert said in " ".join((tmp_path / "audit" / "report.md").read_text().split())
    decisions = tmp_path / "d.json"
    calibrate = ["calibrate", str(results), "--labels", str(mixed), "--max-escape-rate", "1"]
    calibrated = CliRunner().invoke(main, [*calibrate, "-o", str(decisions)])
    note = (
        "3 of the 7 validation images are among the held-out images that chose the model's "
        "epochs or thresholds: it was picked for how it did on them"
    )
    assert calibrated.exit_code == 0 and f"note: {note}" in " ".join(calibrated.output.split())
    assert json.loads(decisions.read_text())["validation"]["seen_in_choosing"] == 3
    shown = json.loads(_cli("info", str(decisions), "--json"))["validation"]
    assert (shown["seen_in_training"], shown["seen_in_choosing"]) == (0, 3)
    assert note in " ".join(decisions.with_suffix(".md").read_text().split())


def test_models_fine_tuned_from_a_chosen_model_count_the_images_that_chose_it(
    chosen: dict[str, Path], tmp_path: Path
) -> None:
    """A model fine-tuned from one whose epochs held-out images chose keeps them (its
    weights started from those epochs), and so does a cross-validation from it; images
    that only scored a training's epochs chose nothing."""
    model, mixed = chosen["model"], chosen["mixed"]
    # A model fine-tuned from it keeps them: its weights started from the kept epochs.
    tuned = tmp_path / "tuned.pt"
    said = _cli("train", str(chosen["train"]), "--out", str(tuned), "--init", str(model),
                "--seg-epochs", "1", "--cls-epochs", "1", "--validation", str(mixed))  # fmt: skip
    chose_start = "3 are among those that chose the starting checkpoint's epochs: their scores"
    assert f"note: of the 7 validation images, {chose_start}" in " ".join(said.split())
    earlier = "the kept epochs of the model it started from"
    assert json.loads(_cli("info", str(tuned), "--json"))["training"]["chosen_on"].startswith(
        f"{earlier}: 12 held-out images"
    )
    # So is a cross-validation from it: its test images chose the starting model.
    said = _cli("cv", str(chosen["held"]), "--init", str(model), "--folds", "2",
                "-o", str(tmp_path / "cv"), "--seg-epochs", "1", "--cls-epochs", "1")  # fmt: skip
    among = "among the held-out images that chose the starting checkpoint's epochs; test images"
    assert f"note: 12 of these 12 images are {among}" in " ".join(said.split())
    folds = [line for line in (tmp_path / "cv" / "report.md").read_text().splitlines()
             if line.startswith("| 1 |") or line.startswith("| 2 |")]  # fmt: skip
    assert len(folds) == 2 and all(f"| 0 (and 6 that chose {earlier}) |" in f for f in folds)
    # Held-out images that only scored the epochs chose nothing: nothing to say.
    scored = tmp_path / "scored.pt"
    _cli("train", str(chosen["train"]), "--out", str(scored), *CHOSEN_EPOCHS, "-q",
         "--validation", str(chosen["held"]))  # fmt: skip
    assert "chosen_on" not in json.loads(_cli("info", str(scored), "--json"))["training"]
    _cli("eval", str(scored), str(mixed), "-o", str(tmp_path / "plain"), "-q")
    assert (
        json.loads((tmp_path / "plain" / "metrics.json").read_text())["overlap"]["chosen"] is None
    )
    assert "images that chose" not in (tmp_path / "plain" / "report.md").read_text()
