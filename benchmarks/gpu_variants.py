"""Exact rewrites of the network measured against the torch engine as it runs today.

    python benchmarks/gpu_variants.py [--precision fp16] [--batch 8] [--size 1408x512]
    python benchmarks/gpu_variants.py --device cpu --precision fp32 --width 0.125 --size 128x128

The kernel profile (gpu_kernels.py) found the paper's network at 1408x512 short of 400
images/s on an H200 in its narrow layers: the one-channel first convolution (11 TFLOP/s),
the 32-channel layers and the transposed convolutions at half resolution (about 100),
against 527 for conv10. Each variant here computes the same function (checked: the
largest difference of its outputs from the engine's is printed) and is timed as the
engine runs in ``psicbatch run`` (folded BatchNorm, the engine's precision,
channels_last, one CUDA graph per call):

- *engine*: the torch engine's own forward pass;
- *deconvs as convs*: stride-1 transposed convolutions (deconv2, 3 and 5) as ordinary
  convolutions with flipped kernels (cuDNN's forward kernels instead of its
  data-gradient ones);
- *first layer on 8 channels*: the input padded with seven zero channels and the first
  kernel with zero weights, a shape tensor cores take;
- *both rewrites*;
- *upsampling as sub-pixel convs*: each stride-2 transposed convolution (deconv1, 4, 6)
  as one 3x3 convolution giving its four output phases as channels, then a pixel
  shuffle (1.44x the multiply-adds, in cuDNN's forward kernels);
- *all three rewrites*;
- *compiled*: ``torch.compile`` (Inductor fuses the element-wise work between
  convolutions) with the same graph replay; GPU only here;
- *conv10 by FFT*: conv10's 15x15 kernel in the frequency domain, as the engine computes
  it on CPUs (psicbatch/engines/frequency_conv.py: about 23 instead of 664 GFLOP per
  1408x512 image, in fp32 complex matrix products), all of a batch in one pass.

A variant that fails says why in its row; the others still run. Adopt a rewrite in the
engine only from a measured gain.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from gpu_kernels import engine_arguments, open_untrained
from torch import nn

from psicbatch.bench.measurements import GPU_LAUNCHES_PER_SYNC, gpu_timed
from psicbatch.engines.cuda_graphs import Forward, GraphedForward
from psicbatch.engines.frequency_conv import large_kernels_in_frequency_domain
from psicbatch.engines.torch_engine import TorchEngine

FIRST_LAYER_CHANNELS = 8


def replace_deconvs(
    model: nn.Module, stride: int, rewrite: Callable[[nn.ConvTranspose2d], nn.Module]
) -> nn.Module:
    """Every transposed convolution of ``stride`` replaced by ``rewrite`` of it."""
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ConvTranspose2d) and child.stride == (stride, stride):
                setattr(module, name, rewrite(child))
    return model


def deconvs_as_convs(model: nn.Module) -> nn.Module:
    """Every stride-1 transposed convolution as the convolution it equals."""
    return replace_deconvs(model, 1, deconv_as_conv)


def deconv_as_conv(deconv: nn.ConvTranspose2d) -> nn.Conv2d:
    """A stride-1 transposed convolution is the convolution with the kernel flipped in
    both axes, input and output channels swapped and padding kernel - 1 - padding."""
    assert deconv.groups == 1 and deconv.dilation == (1, 1) and deconv.output_padding == (0, 0)
    kernel = deconv.kernel_size
    conv = nn.Conv2d(
        deconv.in_channels,
        deconv.out_channels,
        kernel,
        padding=tuple(k - 1 - p for k, p in zip(kernel, deconv.padding, strict=True)),
        bias=deconv.bias is not None,
    ).to(deconv.weight)
    with torch.no_grad():
        conv.weight.copy_(deconv.weight.transpose(0, 1).flip(2, 3))
        if deconv.bias is not None:
            conv.bias.copy_(deconv.bias)
    return conv


class SubPixelUpsampling(nn.Module):
    """A stride-2 transposed convolution (5x5, padding 2, output padding 1) as the 3x3
    convolution whose 4 * C outputs are its output phases, interleaved by a pixel shuffle.

    Output row 2Y + a of the transposed convolution sums input rows Y + 1 - m times
    kernel row a + 2m: phase 0 takes kernel rows 4, 2, 0 at input rows Y - 1, Y, Y + 1,
    phase 1 kernel rows 3, 1 at rows Y, Y + 1; columns likewise."""

    TAPS = ((4, 2, 0), (None, 3, 1))  # kernel index per 3x3 position, for each phase

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        super().__init__()
        assert deconv.stride == (2, 2) and deconv.kernel_size == (5, 5)
        assert deconv.padding == (2, 2) and deconv.output_padding == (1, 1)
        assert deconv.groups == 1 and deconv.dilation == (1, 1)
        inputs, outputs = deconv.in_channels, deconv.out_channels
        self.conv = nn.Conv2d(inputs, 4 * outputs, 3, padding=1, bias=deconv.bias is not None)
        self.conv.to(deconv.weight)
        weight = torch.zeros(outputs, 2, 2, inputs, 3, 3).to(deconv.weight)
        kernel = deconv.weight.detach().transpose(0, 1)  # out, in, 5, 5
        for a, rows in enumerate(self.TAPS):
            for b, columns in enumerate(self.TAPS):
                for t, row in enumerate(rows):
                    for u, column in enumerate(columns):
                        if row is not None and column is not None:
                            weight[:, a, b, :, t, u] = kernel[:, :, row, column]
        with torch.no_grad():
            self.conv.weight.copy_(weight.reshape(4 * outputs, inputs, 3, 3))
            if deconv.bias is not None:
                self.conv.bias.copy_(deconv.bias.repeat_interleave(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


def upsampling_as_subpixel(model: nn.Module) -> nn.Module:
    """Every stride-2 transposed convolution as its sub-pixel convolution."""
    return replace_deconvs(model, 2, SubPixelUpsampling)


class PaddedChannels(nn.Module):
    """The first convolution on its input padded with zero channels (zero weights)."""

    def __init__(self, conv: nn.Conv2d, channels: int, layout: torch.memory_format) -> None:
        super().__init__()
        self.extra, self.layout = channels - conv.in_channels, layout
        self.conv = nn.Conv2d(
            channels, conv.out_channels, conv.kernel_size, padding=conv.padding, bias=True
        ).to(conv.weight)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, : conv.in_channels] = conv.weight
            assert conv.bias is not None  # folded BatchNorm gave it one
            self.conv.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return self.conv(padded.contiguous(memory_format=self.layout))


def first_layer_padded(model: nn.Module, layout: torch.memory_format) -> nn.Module:
    block = model.model.features.layers[0]  # type: ignore[union-attr]
    block[0] = PaddedChannels(block[0], FIRST_LAYER_CHANNELS, layout)
    return model


def both(model: nn.Module, layout: torch.memory_format) -> nn.Module:
    return first_layer_padded(deconvs_as_convs(model), layout)


def conv10_by_fft(model: nn.Module) -> nn.Module:
    large_kernels_in_frequency_domain(model, bytes_per_pass=2**40)  # GPU memory: one pass
    return model


def compiled(model: nn.Module) -> Forward:
    return torch.compile(model)  # type: ignore[return-value]


REWRITES: dict[str, Callable[[nn.Module, torch.memory_format], nn.Module | Forward]] = {
    "deconvs as convs": lambda model, _: deconvs_as_convs(model),
    "first layer on 8 channels": first_layer_padded,
    "both rewrites": both,
    "upsampling as sub-pixel convs": lambda model, _: upsampling_as_subpixel(model),
    "all three rewrites": lambda model, layout: upsampling_as_subpixel(both(model, layout)),
    "compiled": lambda model, _: compiled(model),
    "conv10 by FFT": lambda model, _: conv10_by_fft(model),
}


def images_per_second(forward: Forward, images: torch.Tensor, seconds: float) -> float:
    """Engine-only rate: CUDA events around many calls on a GPU, wall time on a CPU."""
    with torch.inference_mode():
        for _ in range(2):  # eager, then captured (GPU)
            forward(images)
        timed = gpu_timed(lambda: forward(images), images.device) if images.is_cuda else None

        def call() -> float:
            if timed is not None:
                return timed()
            began = time.perf_counter()
            forward(images)
            return time.perf_counter() - began

        launches = GPU_LAUNCHES_PER_SYNC if timed is not None else 1  # per call()
        calls = max(3, int(seconds / (call() * launches)))
        timed_seconds = sum(call() for _ in range(calls))  # call(): seconds per launch
    return len(images) * calls / timed_seconds


def largest_differences(
    forward: Forward, reference: tuple[torch.Tensor, torch.Tensor], images: torch.Tensor
) -> tuple[float, float]:
    with torch.inference_mode():
        outputs = forward(images)
    return tuple(  # type: ignore[return-value]
        float((ours - theirs).abs().max()) for ours, theirs in zip(outputs, reference, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engine_arguments(parser)
    parser.add_argument("--seconds", type=float, default=3.0, help="of timed calls per variant")
    args = parser.parse_args()
    engine, size, _ = open_untrained(args)
    assert isinstance(engine, TorchEngine)
    images = torch.rand(args.batch, engine.manifest.channels, *size, device=args.device)
    images = images.contiguous(memory_format=engine.memory_format)
    with torch.inference_mode():
        reference = engine.forward(images)
    baseline = images_per_second(engine.forward, images, args.seconds)
    print(
        f"{args.device}, {args.precision}, batch {args.batch}, {args.size}, width {args.width}:\n"
    )
    print("| variant | images/s | against the engine | largest difference: probability, mask |")
    print("| --- | --- | --- | --- |")
    print(f"| engine | {baseline:.1f} | 1.00 | - |", flush=True)  # each row as it comes
    for name, rewrite in REWRITES.items():
        if name == "compiled" and not images.is_cuda:
            print(f"| {name} | GPU only here | - | - |")
            continue
        try:
            rewritten = rewrite(copy.deepcopy(engine.model), engine.memory_format)
            if isinstance(rewritten, nn.Module):  # new layers in the engine's layout
                rewritten = rewritten.to(memory_format=engine.memory_format)  # type: ignore[call-overload]
            forward = GraphedForward(rewritten)
            differences = largest_differences(forward, reference, images)
            rate = images_per_second(forward, images, args.seconds)
        except Exception as error:  # a failed variant is a result too
            failure = f"failed: {type(error).__name__}: {str(error)[:120]}"
            print(f"| {name} | {failure} | - | - |", flush=True)
            continue
        print(
            f"| {name} | {rate:.1f} | {rate / baseline:.2f} "
            f"| {differences[0]:.1e}, {differences[1]:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
