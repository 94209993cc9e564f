"""Large convolution kernels computed in the frequency domain, for inference on CPUs.

conv10's 15x15 kernel (128 -> 1024 channels at 1/8 resolution) is 664 of the paper
network's 970 GFLOP per 1408x512 image. By the convolution theorem the same layer costs
far less as products of spectra (overlap-save): the padded input is cut into overlapping
32x32 tiles, each giving 18x18 outputs; per frequency, the tiles' spectra times the
kernel's are one complex matrix product over the input channels. That is about 23 GFLOP
instead of 664, plus the FFTs, and the result is the direct convolution's up to fp32
rounding (about 4e-7 of the largest output). The whole network at 1408x512 ran 1.7x
faster in fp32 on a 2-core AVX-512 Xeon, 2.3x with its kernels held to AVX2, and 2.2x in
bf16 with oneDNN's AMX kernels off (benchmarks/results/frequency-conv-avx512/).

Where it pays (``frequency_domain_pays``): on CPUs in fp32, and in bf16/fp16 unless the
CPU has AMX tiles for that type: there oneDNN's bf16 kernels ran the direct network in
0.45 s per 1408x512 image, against 0.67 s with this form. Not on GPUs: cuDNN's fp16
tensor-core kernels ran conv10 at 527 TFLOP/s on an H200, and this form has not been
measured on a GPU (benchmarks/gpu_variants.py times it). The kernels' spectra are about
4.8x the spatial weights' bytes in fp32 (570 MB for the paper's conv10): the engine's
memory grows by that much.
"""

from __future__ import annotations

from typing import TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

from psicbatch import hardware
from psicbatch.engines.manifest import FREQUENCY_DOMAIN

SMALLEST_KERNEL = 11  # below this the direct convolution's arithmetic is small enough
OUTPUT_BYTES_PER_PASS = 256 * 2**20  # bounds the spectra of one pass's outputs on CPUs
AMX_FLAGS = {"bf16": "amx_bf16", "fp16": "amx_fp16"}


def frequency_domain_pays(device: torch.device, precision: str) -> bool:
    """Whether large kernels run faster in the frequency domain here (see above)."""
    if device.type != "cpu":
        return False
    return AMX_FLAGS.get(precision) not in hardware.cpu_flags()


def large_kernel_method(device: torch.device, precision: str) -> str:
    """How a torch engine computes large kernels on ``device``, as records say it."""
    return FREQUENCY_DOMAIN if frequency_domain_pays(device, precision) else "direct"


class FrequencyConv2d(nn.Module):
    """A stride-1, 'same'-padded ``nn.Conv2d`` computed by FFT (overlap-save), in fp32
    whatever the input's type, which its output keeps.

    The spectra live in a complex buffer made from the convolution's weights: build it
    after the model's last ``.to(dtype)``, which would cast complex buffers too.
    """

    spectrum: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, conv: nn.Conv2d, bytes_per_pass: int = OUTPUT_BYTES_PER_PASS) -> None:
        super().__init__()
        self.bytes_per_pass = bytes_per_pass
        kernel = conv.kernel_size[0]
        if not takes_frequency_form(conv):
            raise ValueError(f"not a stride-1 'same' square convolution: {conv}")
        self.kernel = kernel
        self.fft_size = 1 << (2 * kernel - 1).bit_length()  # 32 for 15x15
        self.tile = self.fft_size - kernel + 1
        weight = conv.weight.detach().float()
        spectrum = torch.fft.rfft2(weight, s=(self.fft_size, self.fft_size)).conj()
        out_channels, in_channels = weight.shape[:2]
        # frequencies x input channels x output channels: one matrix per frequency
        spectrum = spectrum.permute(2, 3, 1, 0).reshape(-1, in_channels, out_channels)
        self.register_buffer("spectrum", spectrum.contiguous(), persistent=False)
        bias = conv.bias.detach().float() if conv.bias is not None else None
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4
        per_image = self._output_spectrum_bytes(*x.shape[-2:])
        images = max(1, self.bytes_per_pass // per_image)
        y = torch.cat([self._convolve(part.float()) for part in x.split(images)])
        if self.bias is not None:
            y += self.bias.view(1, -1, 1, 1)
        y = y.to(x.dtype)
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y

    def _tiles(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.tile), -(-width // self.tile)

    def _output_spectrum_bytes(self, height: int, width: int) -> int:
        rows, columns = self._tiles(height, width)
        return 8 * self.spectrum.shape[0] * self.spectrum.shape[2] * rows * columns

    def _convolve(self, x: torch.Tensor) -> torch.Tensor:
        images, channels, height, width = x.shape
        size, tile, pad = self.fft_size, self.tile, self.kernel // 2
        rows, columns = self._tiles(height, width)
        # zero padding: 'same' on the top and left, up to whole tiles on the bottom and right
        padded = F.pad(
            x,
            (
                pad,
                columns * tile + size - tile - width - pad,
                pad,
                rows * tile + size - tile - height - pad,
            ),
        )
        tiles = padded.unfold(2, size, tile).unfold(3, size, tile)  # N C rows cols size size
        spectra = torch.fft.rfft2(tiles)
        bins = spectra.shape[-2:]
        spectra = spectra.permute(4, 5, 0, 2, 3, 1).reshape(-1, images * rows * columns, channels)
        products = torch.bmm(spectra, self.spectrum)  # frequencies x tiles x out channels
        products = products.reshape(*bins, images, rows, columns, -1)
        # circular correlation of each tile: its first tile x tile outputs are exact
        outputs = torch.fft.irfft2(products, s=(size, size), dim=(0, 1))[:tile, :tile]
        outputs = outputs.permute(2, 5, 3, 0, 4, 1)  # N out rows tile cols tile
        outputs = outputs.reshape(images, -1, rows * tile, columns * tile)
        return outputs[..., :height, :width].contiguous()


def takes_frequency_form(conv: nn.Module) -> TypeGuard[nn.Conv2d]:
    """A convolution this module computes, and large enough to gain from it."""
    if type(conv) is not nn.Conv2d:
        return False
    kernel = conv.kernel_size
    return (
        kernel[0] == kernel[1] >= SMALLEST_KERNEL
        and kernel[0] % 2 == 1
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding == (kernel[0] // 2, kernel[0] // 2)
        and conv.padding_mode == "zeros"
    )


def large_kernels_in_frequency_domain(
    model: nn.Module, bytes_per_pass: int = OUTPUT_BYTES_PER_PASS
) -> int:
    """Replace every large convolution of ``model`` by its frequency form, in place; how
    many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if takes_frequency_form(child):
                setattr(parent, name, FrequencyConv2d(child, bytes_per_pass))
                replaced += 1
    return replaced
