"""Large kernels in the frequency domain: the direct convolution's outputs, where it pays."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from psicbatch import hardware
from psicbatch.assets import demo_model_path
from psicbatch.data.layouts import read_dataset
from psicbatch.data.memory import load_into_memory
from psicbatch.data.synth import generate
from psicbatch.engines import frequency_conv
from psicbatch.engines.frequency_conv import (
    FrequencyConv2d,
    frequency_domain_pays,
    large_kernels_in_frequency_domain,
    takes_frequency_form,
)
from psicbatch.engines.manifest import FREQUENCY_DOMAIN, large_kernel_note
from psicbatch.engines.spec import EngineSpec, describe_engine, open_engine
from psicbatch.model import ModelConfig, PSICNet
from psicbatch.summaries import training_summary
from psicbatch.train import Trainer
from psicbatch.train_options import TrainOptions


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.double() - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize(
    ("images", "channels", "outputs", "height", "width", "kernel", "bias"),
    [
        (3, 5, 7, 37, 23, 15, True),  # sizes that are no multiple of the tile
        (2, 4, 6, 9, 50, 11, False),
        (1, 3, 2, 1, 1, 15, True),  # smaller than the kernel
        (1, 16, 24, 18, 36, 15, True),  # whole tiles
    ],
)
def test_the_frequency_form_computes_the_direct_convolution(
    images, channels, outputs, height, width, kernel, bias
) -> None:
    generator = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(channels, outputs, kernel, padding=kernel // 2, bias=bias)
    if bias:
        nn.init.normal_(conv.bias, generator=generator)
    x = torch.randn(images, channels, height, width, generator=generator)
    b = conv.bias.double() if bias else None
    expected = F.conv2d(x.double(), conv.weight.double(), b, padding=kernel // 2)
    with torch.inference_mode():
        got = FrequencyConv2d(conv)(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert relative_error(got, expected) < 1e-5


def test_half_precision_input_keeps_its_type_and_layout() -> None:
    conv = nn.Conv2d(8, 16, 15, padding=7)
    x = torch.randn(2, 8, 20, 30).bfloat16().contiguous(memory_format=torch.channels_last)
    expected = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=7)
    with torch.inference_mode():
        got = FrequencyConv2d(conv)(x)
    assert got.dtype == torch.bfloat16
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(got, expected) < 1e-2  # bf16's rounding of the output only


def test_images_split_into_passes_give_the_same_outputs(monkeypatch) -> None:
    """The spectra of a pass's outputs are bounded: large batches go in several passes."""
    conv = nn.Conv2d(4, 6, 15, padding=7)
    x = torch.randn(5, 4, 40, 24)
    layer = FrequencyConv2d(conv)
    with torch.inference_mode():
        whole = layer(x)
        layer.bytes_per_pass = 2 * layer._output_spectrum_bytes(40, 24)
        passes = []
        convolve = layer._convolve
        monkeypatch.setattr(
            layer,
            "_convolve",
            lambda part, spectrum: passes.append(len(part)) or convolve(part, spectrum),
        )
        split = layer(x)
    assert passes == [2, 2, 1]
    assert torch.allclose(whole, split, rtol=0, atol=1e-6)


def test_gradients_are_the_direct_convolutions() -> None:
    """Training runs through the frequency form: the same gradients for input and weights."""
    conv = nn.Conv2d(6, 10, 15, padding=7)
    layer = FrequencyConv2d(copy.deepcopy(conv))
    x = torch.randn(3, 6, 30, 21)  # 12 tiles: trained by FFT
    gradients = []
    for module in (conv, layer):
        image = x.clone().requires_grad_()
        (module(image) * torch.linspace(-1, 1, 21)).square().mean().backward()
        gradients.append((image.grad, module.weight.grad, module.bias.grad))
    for direct, frequency in zip(*gradients, strict=True):
        assert relative_error(frequency, direct.double()) < 1e-5


def test_training_steps_with_few_tiles_run_the_direct_convolution(monkeypatch) -> None:
    """Each step transforms the kernel and its gradient: below 8 tiles that costs more
    than the direct convolution saves."""
    layer = FrequencyConv2d(nn.Conv2d(4, 6, 15, padding=7))
    ffts = []
    convolve = layer._convolve
    monkeypatch.setattr(layer, "_convolve", lambda x, s: ffts.append(len(x)) or convolve(x, s))
    for images, side, by_fft in ((7, 18, False), (8, 18, True), (2, 36, True), (1, 36, False)):
        ffts.clear()
        layer(torch.randn(images, 4, side, side)).sum().backward()  # 1 or 4 tiles an image
        assert bool(ffts) is by_fft
    with torch.inference_mode():  # inference: always by FFT
        layer(torch.randn(1, 4, 18, 18))
    assert ffts[-1] == 1


def test_the_kernel_spectrum_follows_the_weights() -> None:
    """Inference keeps the spectrum while the weights stay; a changed weight is seen."""
    conv = nn.Conv2d(3, 4, 11, padding=5)
    layer = FrequencyConv2d(conv)
    assert dict(layer.named_parameters()).keys() == dict(conv.named_parameters()).keys()
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        before = layer(x)
        assert torch.equal(layer(x), before)  # the cached spectrum: the same computation
    with torch.no_grad():
        conv.weight.mul_(-2)  # the layer's own weight: the same parameter
        after = layer(x)
        assert (
            relative_error(
                after, F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=5)
            )
            < 1e-5
        )
    assert not torch.allclose(before, after)


def test_casts_apply_to_the_weights_and_keep_the_transforms() -> None:
    """A model cast after the replacement (``.to(bfloat16)``) still computes the layer."""
    conv = nn.Conv2d(4, 5, 11, padding=5)
    layer = FrequencyConv2d(copy.deepcopy(conv)).to(torch.bfloat16)
    assert layer.weight.dtype == torch.bfloat16 and layer.kernel_rows.is_complex()
    x = torch.randn(2, 4, 20, 20)
    with torch.inference_mode():
        got = layer(x.bfloat16())
    expected = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=5)
    assert got.dtype == torch.bfloat16 and relative_error(got, expected) < 2e-2


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 4, 5, padding=2),  # small kernel: direct is cheap
        nn.Conv2d(4, 4, 15, padding=7, stride=2),
        nn.Conv2d(4, 4, 15, padding=14, dilation=2),
        nn.Conv2d(4, 4, 15, padding=7, groups=2),
        nn.Conv2d(4, 4, 15, padding=0),
        nn.Conv2d(4, 4, 14, padding=7),
        nn.Conv2d(4, 4, 15, padding=7, padding_mode="replicate"),
        nn.ConvTranspose2d(4, 4, 15, padding=7),
    ],
)
def test_only_stride_one_same_convolutions_with_large_kernels_take_the_form(conv) -> None:
    assert not takes_frequency_form(conv)
    with pytest.raises(ValueError, match="not a stride-1"):
        FrequencyConv2d(conv)


def test_only_conv10_of_the_network_is_replaced_and_its_outputs_stay() -> None:
    model = PSICNet(ModelConfig(width=0.25)).eval()
    replaced = copy.deepcopy(model)
    assert large_kernels_in_frequency_domain(replaced) == 1
    assert isinstance(replaced.features.layers[9][0], FrequencyConv2d)
    images = torch.randn(2, 1, 72, 40, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        for a, b in zip(model(images), replaced(images), strict=True):
            assert (a - b).abs().max().item() <= 1e-4 * max(1.0, a.abs().max().item())


@pytest.mark.parametrize(
    ("device", "precision", "flags", "pays"),
    [
        ("cpu", "fp32", {"avx2"}, True),
        ("cpu", "fp32", {"amx_bf16", "amx_fp16"}, True),  # AMX has no fp32 tiles
        ("cpu", "bf16", {"avx512_bf16"}, True),
        ("cpu", "bf16", {"avx512_bf16", "amx_bf16"}, False),  # AMX's bf16 kernels win
        ("cpu", "fp16", {"avx512_fp16", "amx_bf16"}, True),
        ("cpu", "fp16", {"amx_fp16"}, False),
        ("cuda", "fp16", {"avx2"}, False),  # cuDNN's tensor cores; unmeasured there
        ("cuda", "fp32", {"avx2"}, False),
    ],
)
def test_the_form_is_used_where_it_was_measured_faster(
    monkeypatch, device, precision, flags, pays
) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # oneDNN may use all there is
    assert frequency_domain_pays(torch.device(device), precision) is pays


@pytest.mark.parametrize("frequency", [True, False])
def test_the_cpu_engine_runs_and_records_the_form_the_rule_gives(monkeypatch, frequency) -> None:
    """The demo model's probabilities agree either way; records say which ran."""
    monkeypatch.setattr(frequency_conv, "frequency_domain_pays", lambda d, p: frequency)
    spec = EngineSpec(checkpoint=demo_model_path(), precision="fp32")
    engine = open_engine(spec, "cpu", 4)
    used = any(isinstance(m, FrequencyConv2d) for m in engine.model.modules())
    assert used is frequency
    recorded = describe_engine(spec, "cpu", 4).backend_details
    assert recorded == engine.manifest.backend_details  # described as it runs
    assert (recorded["large_kernels"] == FREQUENCY_DOMAIN) is frequency
    assert ("frequency domain" in large_kernel_note(recorded)) is frequency
    images = torch.randn(
        3, 1, *engine.manifest.input_size, generator=torch.Generator().manual_seed(2)
    )
    probabilities, masks = engine.infer(images)
    monkeypatch.setattr(frequency_conv, "frequency_domain_pays", lambda d, p: not frequency)
    other = open_engine(spec, "cpu", 4).infer(images)
    assert torch.allclose(probabilities, other[0], rtol=0, atol=1e-5)
    assert torch.allclose(masks, other[1], rtol=0, atol=1e-5)


def test_training_in_the_frequency_domain_follows_direct_training(tmp_path, monkeypatch) -> None:
    """fp32 training on CPUs runs conv10 by FFT: checkpoints keep the network's weight
    names, say which form trained them, and the losses follow direct training's."""
    generate(tmp_path / "data", 24, (64, 64), defect_rate=0.5, seed=3)
    data = load_into_memory(read_dataset(tmp_path / "data", "folder"), (64, 64), 1)
    options = TrainOptions(
        width=0.125, input_size=(64, 64), seg_epochs=3, cls_epochs=2, batch_size=8, precision="fp32"
    )
    convolve, trained_by_fft = FrequencyConv2d._convolve, []

    def recording(layer, x, spectrum):
        trained_by_fft.append(torch.is_grad_enabled())
        return convolve(layer, x, spectrum)

    monkeypatch.setattr(FrequencyConv2d, "_convolve", recording)
    trained = {}
    for frequency in (True, False):
        monkeypatch.setattr(frequency_conv, "frequency_domain_pays", lambda d, p, f=frequency: f)
        trained[frequency] = Trainer(data, options, tmp_path / f"{frequency}.pt").run()
    assert any(trained_by_fft)  # batches of 8 images of one tile each: trained by FFT
    assert trained[True].training["large_kernels"] == FREQUENCY_DOMAIN
    assert trained[False].training["large_kernels"] == "direct"
    shown = training_summary(trained[True].training)  # what info shows of a checkpoint
    assert (shown["precision"], shown["large_kernels"]) == ("fp32", FREQUENCY_DOMAIN)
    assert trained[True].state_dict.keys() == PSICNet(ModelConfig(width=0.125)).state_dict().keys()
    # Step two, on 24 images, moves by several percent with any rounding change (direct
    # training on one thread instead of two does too): step one's losses are compared.
    losses = [trained[f].training["loss_history"]["segmentation"] for f in (True, False)]
    assert np.allclose(*losses, rtol=2e-3)
