"""Convolutions and their ReLUs as one oneDNN call on CPUs (engines/fused_relu.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from psicbatch.assets import demo_model_path
from psicbatch.engines import fused_relu
from psicbatch.engines.folding import fold_batchnorm
from psicbatch.engines.fused_relu import ConvReLU, fusion_works, relu_into_convolutions
from psicbatch.engines.spec import EngineSpec, open_engine
from psicbatch.model import ModelConfig, PSICNet

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 0.05}


def folded_model(dtype: torch.dtype, layout: torch.memory_format) -> nn.Module:
    torch.manual_seed(0)
    model = fold_batchnorm(PSICNet(ModelConfig(width=0.125)).eval()).to(dtype)
    return model.to(memory_format=layout)  # type: ignore[call-overload]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_fused_network_computes_what_the_separate_one_does(dtype, layout) -> None:
    if not fusion_works(dtype):
        assert dtype == torch.bfloat16  # fp32 fuses on every CPU tested
        pytest.skip("oneDNN here has no bf16 convolutions (AVX-512 or AVX-NE-CONVERT)")
    separate, fused = folded_model(dtype, layout), folded_model(dtype, layout)
    assert relu_into_convolutions(fused) == 20  # every conv and deconv block of PSIC-Net
    assert not any(isinstance(m, nn.ReLU) for m in fused.modules())
    images = (torch.rand(2, 1, 72, 40) * 4 - 2).to(dtype).contiguous(memory_format=layout)
    with torch.inference_mode():
        expected, got = separate(images), fused(images)
    for a, b in zip(expected, got, strict=True):
        assert torch.allclose(a.float(), b.float(), atol=TOLERANCE[dtype], rtol=0)


def test_only_a_convolution_whose_block_goes_on_to_a_relu_is_fused() -> None:
    conv = nn.Conv2d(2, 2, 3, padding=1)
    model = nn.Sequential(
        nn.Sequential(conv, nn.Identity(), nn.ReLU()),  # a folded block: fused
        nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU()),
        nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Sigmoid()),
        nn.Sequential(nn.Conv2d(2, 2, 3, padding="same"), nn.ReLU()),  # padding as a word
        nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), nn.ReLU()),
        nn.Sequential(nn.ConvTranspose2d(2, 2, 3, padding=1), nn.ReLU()),  # fused
    ).eval()
    images = torch.rand(1, 2, 8, 8)
    with torch.inference_mode():
        expected = model(images)
        assert relu_into_convolutions(model) == 2
        assert torch.allclose(model(images), expected, atol=1e-5)
    first = model[0]
    assert isinstance(first[0], ConvReLU) and first[0].conv is conv
    assert isinstance(first[2], nn.Identity) and isinstance(model[5][1], nn.Identity)
    assert [type(b[-1]) for b in model[1:5]] == [nn.ReLU, nn.Sigmoid, nn.ReLU, nn.ReLU]
    with pytest.raises(ValueError, match="zero-padded"):
        ConvReLU(model[4][0])


def test_the_check_says_whether_the_fused_operator_runs_here() -> None:
    """bf16 fuses only where oneDNN has bf16 convolutions: the check must say so rather
    than let an engine fail at its first batch."""
    conv = nn.Conv2d(2, 2, 3, padding=1).to(torch.bfloat16).eval()
    try:
        with torch.inference_mode():
            fused_relu._conv_relu(conv, torch.rand(1, 2, 5, 5, dtype=torch.bfloat16))
        runs = True
    except RuntimeError:
        runs = False
    assert fusion_works(torch.bfloat16) == runs


def test_the_check_leaves_the_random_stream_as_it_was() -> None:
    """Engines open between seeded steps (cv trains, evaluates, trains again)."""
    fusion_works.cache_clear()
    try:
        before = torch.get_rng_state()
        assert fusion_works(torch.float32)
        assert torch.equal(torch.get_rng_state(), before)
    finally:
        fusion_works.cache_clear()


@pytest.mark.parametrize("fault", ["bias left out", "no ReLU"])
def test_the_check_refuses_an_operator_that_computes_something_else(monkeypatch, fault) -> None:
    real = fused_relu._conv_relu

    def wrong(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if fault == "no ReLU":
            return conv(x)
        unbiased = copy.deepcopy(conv)
        unbiased.bias = None
        return real(unbiased, x)

    monkeypatch.setattr(fused_relu, "_conv_relu", wrong)
    fusion_works.cache_clear()
    try:
        assert not fusion_works(torch.float32)
    finally:
        fusion_works.cache_clear()


def test_an_engine_keeps_its_relus_where_the_fused_operator_fails(monkeypatch) -> None:
    def broken(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no oneDNN post-ops in this build")

    monkeypatch.setattr(fused_relu, "_conv_relu", broken)
    fusion_works.cache_clear()
    try:
        assert not fusion_works(torch.float32)
        engine = open_engine(EngineSpec(checkpoint=demo_model_path(), precision="fp32"), "cpu", 2)
    finally:
        fusion_works.cache_clear()
    assert not any(isinstance(m, ConvReLU) for m in engine.model.modules())
    probabilities, masks = engine.infer(torch.rand(2, 1, 64, 64))
    assert probabilities.shape == (2,) and masks.shape == (2, 64, 64)
