"""Each convolution and the ReLU after it as one oneDNN call, on CPUs (inference only).

Eager torch runs a convolution, then its ReLU: one more pass over every activation map,
which for the paper's network at 1408x512 is about 1.5 GB of memory traffic per image.
oneDNN applies the ReLU as the convolution writes its output (the post-op torch's own
compiler uses, ``torch.ops.mkldnn._convolution_pointwise``). Outputs are the same up to
float rounding (on the paper's network, bit for bit: torch's own convolutions call the
same oneDNN kernels there). Where that operator is missing or fails, the model keeps its
separate ReLUs.
"""

from __future__ import annotations

import functools
from typing import TypeGuard

import torch
from torch import nn

Convolution = nn.Conv2d | nn.ConvTranspose2d


class ConvReLU(nn.Module):
    """``relu(conv(x))`` in one oneDNN call; ``conv`` keeps its own parameters."""

    def __init__(self, conv: Convolution) -> None:
        super().__init__()
        if not fusable(conv):
            raise ValueError(f"not a zero-padded 2-d convolution: {conv}")
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_relu(self.conv, x)


def _conv_relu(conv: Convolution, x: torch.Tensor) -> torch.Tensor:
    shape = (conv.padding, conv.stride, conv.dilation, conv.groups)
    if isinstance(conv, nn.ConvTranspose2d):
        padding, stride, dilation, groups = shape
        return torch.ops.mkldnn._convolution_transpose_pointwise(
            x, conv.weight, conv.bias, padding, conv.output_padding, stride, dilation, groups,
            "relu", [None], "",
        )  # fmt: skip
    return torch.ops.mkldnn._convolution_pointwise(
        x, conv.weight, conv.bias, *shape, "relu", [None], ""
    )


def fusable(conv: nn.Module) -> TypeGuard[Convolution]:
    """A convolution the fused operator computes: zero padding given in pixels."""
    return (
        type(conv) in (nn.Conv2d, nn.ConvTranspose2d)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


@functools.cache
def fusion_works(dtype: torch.dtype) -> bool:
    """Whether this torch build computes the fused form on CPUs for ``dtype``, and agrees
    with the separate one on a tiny input to within a few roundings of ``dtype`` (a check
    of milliseconds, once per type). The biases are large enough that one left out, or a
    ReLU not applied, would show."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 6, 6, generator=generator).to(dtype)
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random stream as it was
        convs = (nn.Conv2d(2, 3, 3, padding=1), nn.ConvTranspose2d(2, 3, 3, 2, 1, 1))
    for conv in convs:
        conv.bias = nn.Parameter(torch.tensor([0.5, -0.5, 0.25]))
    try:
        with torch.inference_mode():
            for conv in convs:
                conv = conv.to(dtype).eval()
                expected = torch.relu(conv(x)).float()
                tolerance = 16 * torch.finfo(dtype).eps * max(1.0, float(expected.max()))
                difference = (_conv_relu(conv, x).float() - expected).abs().max()
                if difference > tolerance:
                    return False
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


def relu_into_convolutions(model: nn.Module) -> int:
    """Fuse, in place, every convolution whose block goes on to a ReLU (``Identity``
    layers between them, such as folded BatchNorms, are skipped); how many were fused."""
    fused = 0
    for block in model.modules():
        if not isinstance(block, nn.Sequential):
            continue
        layers = list(block)
        for index, layer in enumerate(layers):
            following = [x for x in layers[index + 1 :] if not isinstance(x, nn.Identity)]
            if fusable(layer) and following and isinstance(following[0], nn.ReLU):
                block[index] = ConvReLU(layer)
                block[layers.index(following[0])] = nn.Identity()
                fused += 1
    return fused
