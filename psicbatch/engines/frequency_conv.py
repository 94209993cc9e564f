"""Large convolution kernels computed in the frequency domain, on CPUs (inference and training).

conv10's 15x15 kernel (128 -> 1024 channels at 1/8 resolution) is 664 of the paper
network's 970 GFLOP per 1408x512 image. By the convolution theorem the same layer costs
far less as products of spectra (overlap-save): the padded input is cut into overlapping
32x32 tiles, each giving 18x18 outputs; per frequency, the tiles' spectra times the
kernel's are one complex matrix product over the input channels. That is about 23 GFLOP
instead of 664, plus the FFTs, and the result is the direct convolution's up to fp32
rounding (about 4e-7 of the largest output). The whole network at 1408x512 ran 1.7x
faster in fp32 on a 2-core AVX-512 Xeon, 2.3x with its kernels held to AVX2, and 2.3x in
bf16 with oneDNN's AMX kernels off; training steps 1.6-1.9x
(benchmarks/results/frequency-conv-avx512/).

Where it pays (``frequency_domain_pays``): on CPUs in fp32, and in bf16/fp16 unless the
CPU has AMX tiles for that type: there oneDNN's bf16 kernels ran the direct network in
0.39 s per 1408x512 image, against 0.49 s with this form. Not on GPUs: cuDNN's fp16
tensor-core kernels ran conv10 at 527 TFLOP/s on an H200, and this form has not been
measured on a GPU (benchmarks/gpu_variants.py times it). The kernels' spectra are about
4.8x the spatial weights' bytes in fp32 (570 MB for the paper's conv10): the engine's
memory grows by that much.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

from psicbatch import hardware
from psicbatch.engines.manifest import FREQUENCY_DOMAIN, Manifest

# The network's 5x5 layers stay direct. Alone, in fp32 at 1408x512 on a 2-core AVX-512
# Xeon (natively and held to AVX2), a 64-channel one ran 1.6-2.4x slower by FFT; a
# 128-channel one 1.25-1.3x faster, about 5% of the network for 70 MB of spectra each.
SMALLEST_KERNEL = 11
# A training step also transforms the kernel and its gradient, whatever the batch: with
# fewer tiles than this (a batch of 4 at 128x128 has 4) the direct form trained faster.
FEWEST_TILES_TO_TRAIN = 8
OUTPUT_BYTES_PER_PASS = 256 * 2**20  # bounds the spectra of one pass's outputs on CPUs


def frequency_domain_pays(device: torch.device, precision: str) -> bool:
    """Whether large kernels run faster in the frequency domain here (see above)."""
    if device.type != "cpu":
        return False
    return not hardware.onednn_uses_amx(precision)


def large_kernel_method(device: torch.device, precision: str) -> str:
    """How torch computes large kernels on ``device``, as records say it."""
    return FREQUENCY_DOMAIN if frequency_domain_pays(device, precision) else "direct"


def with_large_kernel_method(manifest: Manifest, device: torch.device) -> Manifest:
    """A torch engine's manifest saying how it computes large kernels on ``device``
    (``backend_details["large_kernels"]``): what runs, not what was built."""
    method = large_kernel_method(device, manifest.precision)
    return replace(manifest, backend_details={**manifest.backend_details, "large_kernels": method})


class FrequencyConv2d(nn.Module):
    """A stride-1, 'same'-padded ``nn.Conv2d`` computed by FFT (overlap-save), in fp32
    whatever the input's type, which its output keeps.

    It holds the convolution's own ``weight`` and ``bias`` under the same names, so a
    model's state dict and training are unchanged. The kernel's spectrum is computed from
    the weight in every call that trains it, and otherwise once per weight version;
    training steps with few tiles run the direct convolution on the same weights.
    Transforms of tiny sizes (the 15x15 kernel; the 18x18 outputs kept of each 32x32
    tile) are matrix products with DFT matrices, which skip what is zero or thrown away;
    the input tiles use torch's FFT. Frequencies are ordered (column, row) throughout, so
    each product reads its operand in place.
    """

    def __init__(self, conv: nn.Conv2d, bytes_per_pass: int = OUTPUT_BYTES_PER_PASS) -> None:
        super().__init__()
        if not takes_frequency_form(conv):
            raise ValueError(f"not a stride-1 'same' square convolution: {conv}")
        self.weight, self.bias = conv.weight, conv.bias
        self.bytes_per_pass = bytes_per_pass
        self.kernel = kernel = conv.kernel_size[0]
        self.fft_size = size = 1 << (2 * kernel - 1).bit_length()  # 32 for 15x15
        self.tile = size - kernel + 1
        # Correlation is convolution with the kernel flipped: the exact outputs of a tile
        # then start at kernel - 1.
        kept = torch.arange(kernel - 1, size)
        rows = torch.arange(size)
        columns = rows[: size // 2 + 1]  # a real input's spectrum: half the columns
        taps = rows[:kernel]
        mirrored = torch.full(columns.shape, 2.0)
        mirrored[0] = mirrored[-1] = 1.0  # the columns without a mirror image
        self.kernel_columns = _dft(columns, taps, size, -1)
        self.kernel_rows = _dft(rows, taps, size, -1)
        self.inverse_rows = _dft(kept, rows, size, 1) / size
        self.inverse_columns = _dft(kept, columns, size, 1) * mirrored / size
        self._cached: tuple[tuple[int, int, torch.dtype], torch.Tensor] | None = None
        self._apply(lambda tensor: tensor)  # the DFT matrices to the weight's device

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> FrequencyConv2d:
        """Moves and casts (``.to``, ``.half()``...) apply to the weights; the complex DFT
        matrices only follow their device (buffers would be cast to real types)."""
        super()._apply(fn, recurse)
        for name in ("kernel_columns", "kernel_rows", "inverse_rows", "inverse_columns"):
            setattr(self, name, getattr(self, name).to(self.weight.device))
        self._cached = None
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        training = torch.is_grad_enabled() and self.weight.requires_grad
        rows, columns = self._tiles(*x.shape[-2:])
        if training and len(x) * rows * columns < FEWEST_TILES_TO_TRAIN:
            return F.conv2d(x, self.weight, self.bias, padding=self.kernel // 2)
        with torch.autocast(x.device.type, enabled=False):
            spectrum = self._kernel_spectrum(training)
            per_image = self._output_spectrum_bytes(*x.shape[-2:])
            images = max(1, self.bytes_per_pass // per_image)
            parts = [self._convolve(part.float(), spectrum) for part in x.split(images)]
            y = parts[0] if len(parts) == 1 else torch.cat(parts)
            if self.bias is not None:
                y = y + self.bias.float()
        y = y.to(x.dtype)  # N H W out
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            return y.permute(0, 3, 1, 2)
        # as N out H W: torch copies a transposed matrix faster than a permuted 4-d tensor
        out = y.new_empty(len(y), y.shape[-1], *y.shape[1:3])
        channels = y.shape[-1]
        for image in range(len(y)):  # indexed: in-place copies into views keep gradients
            out[image].view(channels, -1).copy_(y[image].view(-1, channels).t())
        return out

    def _kernel_spectrum(self, training: bool) -> torch.Tensor:
        if training:
            self._cached = None  # the weight changes with every step
            return self._spectrum_of(self.weight)
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype)
        if self._cached is None or self._cached[0] != key:
            with torch.no_grad():
                self._cached = (key, self._spectrum_of(self.weight))
        return self._cached[1]

    def _spectrum_of(self, weight: torch.Tensor) -> torch.Tensor:
        """Frequencies x input channels x output channels: one matrix per frequency."""
        out_channels, in_channels, kernel, _ = weight.shape
        flipped = weight.float().flip(2, 3).permute(3, 2, 1, 0)  # column row in out
        flipped = flipped.reshape(kernel, -1).to(torch.complex64)
        half = self.kernel_columns @ flipped  # v (row in out)
        spectrum = torch.matmul(self.kernel_rows, half.reshape(len(half), kernel, -1))
        return spectrum.reshape(-1, in_channels, out_channels)  # (v u) in out

    def _tiles(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.tile), -(-width // self.tile)

    def _output_spectrum_bytes(self, height: int, width: int) -> int:
        rows, columns = self._tiles(height, width)
        bins = self.fft_size * (self.fft_size // 2 + 1)
        return 8 * bins * self.weight.shape[0] * rows * columns

    def _convolve(self, x: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
        """N C H W in, N H W out (channels last: how the products come out)."""
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
        tiles = padded.unfold(2, size, tile).unfold(3, size, tile)  # N C rows cols u v
        spectra = torch.fft.rfft2(tiles).permute(5, 4, 0, 2, 3, 1)  # v u N rows cols C
        spectra = spectra.reshape(len(spectrum), images * rows * columns, channels)
        products = torch.bmm(spectra, spectrum)  # (v u) tiles out
        # the inverse transform, for the tile x tile outputs kept only
        products = products.reshape(size // 2 + 1, size, -1)
        half = self._inverse_along_rows(products)  # v a (tiles out)
        outputs = (self.inverse_columns @ half.reshape(len(half), -1)).real  # b (a tiles out)
        outputs = outputs.reshape(tile, tile, images, rows, columns, -1)
        outputs = outputs.permute(2, 3, 1, 4, 0, 5)  # N rows a cols b out
        outputs = outputs.reshape(images, rows * tile, columns * tile, -1)
        return outputs[:, :height, :width].contiguous()  # N H W out

    def _inverse_along_rows(self, products: torch.Tensor) -> torch.Tensor:
        """One product per column frequency: 2x faster than the batched product, which
        copies its operands; the batched one where gradients are needed."""
        if products.requires_grad:
            return torch.matmul(self.inverse_rows, products)
        half = products.new_empty(len(products), self.tile, products.shape[-1])
        for column, part in enumerate(products):
            torch.mm(self.inverse_rows, part, out=half[column])
        return half


def _dft(outputs: torch.Tensor, inputs: torch.Tensor, size: int, sign: int) -> torch.Tensor:
    """exp(sign 2 pi i o n / size) for output indices o (rows) and input indices n
    (columns), in complex64 (made in float64)."""
    angles = sign * 2 * math.pi * torch.outer(outputs, inputs).double() / size
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


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
