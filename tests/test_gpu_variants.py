"""The rewrites that the GPU check times (benchmarks/gpu_variants.py) compute what they
replace, so a faster one could be adopted on its measurement alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from psicbatch.engines.export import ProbabilityModel
from psicbatch.engines.folding import fold_batchnorm
from psicbatch.model import ModelConfig, PSICNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gpu_variants import REWRITES, SubPixelUpsampling, deconv_as_conv


def test_layer_rewrites_equal_the_transposed_convolutions() -> None:
    torch.manual_seed(0)
    images = torch.randn(2, 6, 7, 9)  # odd sizes: every border case of both phases
    upsampling = torch.nn.ConvTranspose2d(6, 5, 5, stride=2, padding=2, output_padding=1)
    same_size = torch.nn.ConvTranspose2d(6, 5, 5, stride=1, padding=2)
    with torch.no_grad():
        for deconv, rewritten in ((upsampling, SubPixelUpsampling), (same_size, deconv_as_conv)):
            expected = deconv(images)
            got = rewritten(deconv)(images)
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", [name for name in REWRITES if name != "compiled"])
def test_network_rewrites_keep_the_engines_outputs(name: str) -> None:
    torch.manual_seed(1)
    model = ProbabilityModel(fold_batchnorm(PSICNet(ModelConfig(width=0.125)).eval()))
    images = torch.rand(2, 1, 64, 96)
    with torch.no_grad():
        expected = model(images)
        rewritten = REWRITES[name](model, torch.contiguous_format)
        for got, want in zip(rewritten(images), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
