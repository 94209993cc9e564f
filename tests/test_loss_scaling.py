"""fp16 training's dynamic loss scaling: small gradients survive, overflowing steps are
skipped, the scale adapts, and scaling leaves an fp32 training exactly as it was."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from psicbatch import loss_scaling
from psicbatch.data.layouts import read_dataset
from psicbatch.data.memory import load_into_memory
from psicbatch.data.synth import generate
from psicbatch.loss_scaling import INITIAL_SCALE, LossScale
from psicbatch.train import Trainer
from psicbatch.train_options import TrainOptions


def test_a_gradient_that_underflows_in_fp16_survives_scaling() -> None:
    weight = torch.nn.Parameter(torch.ones(4))

    def loss() -> torch.Tensor:  # the backward pass runs in fp16 through the product
        small = torch.full((4,), 1e-4, dtype=torch.float16)
        return (weight.half() * small).float().sum() * 1e-4

    (plain,) = torch.autograd.grad(loss(), [weight])
    assert not plain.any()  # 1e-8 is below fp16's smallest value
    scale = LossScale.for_precision("fp16")
    (scaled,) = scale.gradients(loss(), [weight])
    assert scaled == pytest.approx(torch.full((4,), 1e-8), rel=1e-2)


def test_an_overflowing_step_is_skipped_and_the_scale_adapts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loss_scaling, "GROWTH_INTERVAL", 3)
    weight = torch.nn.Parameter(torch.ones(2))
    scale = LossScale.for_precision("fp16")
    assert scale.gradients((weight * 1e35).sum(), [weight]) is None  # inf once scaled
    assert (scale.scale, scale.skipped_steps) == (INITIAL_SCALE / 2, 1)
    for _ in range(3):
        (grad,) = scale.gradients((weight * 3).sum(), [weight])
        assert torch.equal(grad, torch.full((2,), 3.0))
    assert (scale.scale, scale.good_steps) == (INITIAL_SCALE, 0)  # doubled after 3


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bf16_and_fp32_are_not_scaled(precision: str) -> None:
    scale = LossScale.for_precision(precision)
    weight = torch.nn.Parameter(torch.ones(2))
    assert scale.gradients((weight * 1e38).sum() * 10, [weight]) is not None  # not checked
    assert (scale.scale, scale.dynamic) == (1.0, False)


def test_a_scaled_fp32_training_gives_the_same_model(tmp_path: Path) -> None:
    """The trainer divides what it multiplied: with a power-of-two scale every gradient,
    and so every weight, is exactly the unscaled one's."""
    generate(tmp_path / "data", 12, (48, 48), defect_rate=0.5, seed=5)
    data = load_into_memory(read_dataset(tmp_path / "data", "folder"), (48, 48), 1)
    options = TrainOptions(
        width=0.125, input_size=(48, 48), seg_epochs=2, cls_epochs=2, precision="fp32"
    )
    plain = Trainer(data, options, tmp_path / "plain.pt").run()
    trainer = Trainer(data, replace(options), tmp_path / "scaled.pt")
    trainer.loss_scale = LossScale(INITIAL_SCALE, dynamic=True)
    scaled = trainer.run()
    assert scaled.training["loss_scale"]["scale"] == INITIAL_SCALE
    assert scaled.training["loss_scale"]["good_steps"] > 0
    for name, tensor in plain.state_dict.items():
        assert torch.equal(tensor, scaled.state_dict[name]), name
