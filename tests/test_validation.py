"""``train --validation``: every epoch scored on held-out images, by its phase's own loss
and (for the image decision) the paper's AP, without changing the model."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import psicbatch.train as train_module
from psicbatch.cli import main
from psicbatch.data.memory import TensorDataset
from psicbatch.data.synth import generate
from psicbatch.errors import PsicbatchError
from psicbatch.memory_inference import predict_batches
from psicbatch.metrics import average_precision
from psicbatch.train import Trainer, partial_path
from psicbatch.train_options import TrainOptions
from psicbatch.validation import EpochValidation, best_epochs
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
