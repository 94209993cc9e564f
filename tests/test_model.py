from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from psicbatch.model import ModelConfig, PSICNet, count_flops, count_parameters, pad_to_multiple

TINY = ModelConfig(width=0.125)

# The paper's layer table (section 3.1), written out independently of the model code.
FEATURES = [  # (in, out, kernel)
    (1, 32, 5),
    (32, 32, 5),
    (32, 64, 5),
    (64, 64, 5),
    (64, 64, 5),
    (64, 128, 5),
    (128, 128, 5),
    (128, 128, 5),
    (128, 128, 5),
    (128, 1024, 15),
]
DECONVS = [(64, 64), (64, 64), (64, 64), (64, 32), (32, 32), (32, 32)]  # all 5x5
CLASSIFIER = [(1025, 8), (8, 16), (16, 32)]  # all 5x5


def paper_parameter_count() -> int:
    total = sum(i * o * k * k + 2 * o for i, o, k in FEATURES)  # conv (no bias) + BN
    total += 1024 * 64 + 2 * 64  # heatmap 1x1 conv + BN
    total += sum(i * o * 25 + 2 * o for i, o in DECONVS)
    total += 32 * 1 + 1  # final 1x1 conv with bias
    total += sum(i * o * 25 + 2 * o for i, o in CLASSIFIER)
    total += (2 * 32 + 2) * 1 + 1  # fully connected layer
    return total


def paper_gflop(height: int, width: int) -> float:
    """2 x multiply-accumulates; a transposed conv costs in_pixels * in * out * k * k."""
    full, half, quarter, eighth = (height * width / 4**i for i in range(4))
    scale = [full, full, half, half, half, quarter, quarter, quarter, quarter, eighth]
    macs = sum(s * i * o * k * k for s, (i, o, k) in zip(scale, FEATURES, strict=True))
    macs += eighth * 1024 * 64
    deconv_inputs = [eighth, quarter, quarter, quarter, half, half]
    macs += sum(s * i * o * 25 for s, (i, o) in zip(deconv_inputs, DECONVS, strict=True))
    macs += full * 32
    sixteenth, th32, th64 = eighth / 4, eighth / 16, eighth / 64
    macs += sum(
        s * i * o * 25 for s, (i, o) in zip([sixteenth, th32, th64], CLASSIFIER, strict=True)
    )
    return 2 * macs / 1e9


def test_paper_network_parameter_count() -> None:
    model = PSICNet(ModelConfig(width=1.0))
    assert count_parameters(model) == paper_parameter_count()
    assert 31_000_000 < count_parameters(model) < 33_000_000


@pytest.mark.parametrize(("height", "width"), [(1408, 512), (512, 512), (232, 640)])
def test_flop_count_matches_layer_table(height: int, width: int) -> None:
    counted = count_flops(ModelConfig(width=1.0), height, width) / 1e9
    assert counted == pytest.approx(paper_gflop(height, width), rel=0.002)


def test_flop_count_of_paper_sizes_is_in_published_range() -> None:
    assert 950 < count_flops(ModelConfig(), 1408, 512) / 1e9 < 990
    assert 340 < count_flops(ModelConfig(), 512, 512) / 1e9 < 360


@pytest.mark.parametrize(
    ("height", "width"), [(37, 53), (64, 64), (1408, 512), (8, 8), (1, 1), (100, 17)]
)
def test_outputs_have_input_resolution(height: int, width: int) -> None:
    model = PSICNet(TINY).eval()
    with torch.no_grad():
        seg, cls = model(torch.randn(2, 1, height, width))
    assert seg.shape == (2, 1, height, width)
    assert cls.shape == (2, 1)
    assert torch.isfinite(seg).all() and torch.isfinite(cls).all()


def test_colour_input() -> None:
    model = PSICNet(ModelConfig(width=0.125, in_channels=3)).eval()
    with torch.no_grad():
        seg, cls = model(torch.randn(1, 3, 40, 48))
    assert seg.shape == (1, 1, 40, 48) and cls.shape == (1, 1)


def test_batch_results_equal_single_image_results() -> None:
    model = PSICNet(TINY).eval()
    images = torch.randn(4, 1, 37, 53)
    with torch.no_grad():
        seg_batch, cls_batch = model(images)
        singles = [model(image[None]) for image in images]
    torch.testing.assert_close(seg_batch, torch.cat([s for s, _ in singles]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cls_batch, torch.cat([c for _, c in singles]), atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_parameter() -> None:
    model = PSICNet(TINY).train()
    seg, cls = model(torch.randn(2, 1, 64, 72))
    (seg.square().mean() + cls.square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_segmentation_parameters_exclude_the_classifier() -> None:
    model = PSICNet(TINY)
    step_one = {id(p) for p in model.segmentation_parameters()}
    classifier = {id(p) for p in model.classifier.parameters()}
    assert step_one.isdisjoint(classifier)
    assert len(step_one) + len(classifier) == len(list(model.parameters()))


def test_width_scales_channels_but_not_the_classifier_head() -> None:
    model = PSICNet(ModelConfig(width=0.25))
    assert model.features.out_channels == 256
    assert model.classifier.stages[-1][0].out_channels == 32


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"width": -1}, {"in_channels": 2}])
def test_invalid_config_is_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ModelConfig(**kwargs)


def test_pad_to_multiple_replicates_edges() -> None:
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 4, 4)
    assert torch.equal(padded[..., :2, :3], x)
    assert torch.equal(padded[0, 0, 3], torch.tensor([3.0, 4.0, 5.0, 5.0]))
    assert pad_to_multiple(padded, 4) is padded


def test_the_classifier_from_its_kept_inputs_equals_the_paper_head() -> None:
    """Two-step training keeps ``Classifier.inputs`` of every image instead of the deep
    features and full-size logits; ``head`` of them must be the decision head exactly:
    here written out in one piece (as it was before the split)."""
    torch.manual_seed(0)
    model = PSICNet(ModelConfig(width=0.125)).eval()
    deep, seg = model.segment(torch.randn(2, 1, 60, 90))
    head = model.classifier
    x = torch.cat([deep, F.max_pool2d(seg, 8)], dim=1)
    for stage in head.stages:
        x = stage(F.max_pool2d(x, 2, ceil_mode=True))
    features = [x.amax(dim=(2, 3)), x.mean(dim=(2, 3)), seg.amax(dim=(2, 3)), seg.mean(dim=(2, 3))]
    expected = head.fc(torch.cat(features, dim=1))
    pooled, stats = head.inputs(deep, seg)
    assert pooled.shape[-2:] == (4, 6) and stats.shape == (2, 2)  # 1/16 of 64x96
    assert torch.equal(head.head(pooled, stats), expected)
