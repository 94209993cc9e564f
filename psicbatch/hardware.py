"""Which precisions this machine's CPU computes natively, from what torch reports.

bf16 and fp16 are fast on a CPU only with native instructions (AVX-512 BF16 or AMX;
AVX-512 FP16 or AMX-FP16; their Arm counterparts). Elsewhere torch emulates them: on an
AVX2 PC bf16 autocast runs about 6x slower than fp32. int8 runs everywhere, but is fast
only with dot-product instructions (VNNI or AMX on x86, the dot-product extension on Arm).
Every ``auto`` precision asks here instead of assuming the hardware, and where the answer
depends on more than instruction flags (native bf16 without AMX), times a convolution.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

INT8_DOT_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"}
AMX_FLAGS = {"bf16": "amx_bf16", "fp16": "amx_fp16", "int8": "amx_int8"}
# Environment variables that hold torch, oneDNN or MKL to an older instruction set
# (to measure what a machine without the newer one would run).
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


@dataclass(frozen=True)
class CpuPrecisions:
    capability: str  # torch's CPU kernel level: AVX512, AVX2, DEFAULT, ...
    bf16: bool  # native bf16 matrix products (oneDNN says so)
    fp16: bool  # native fp16 matrix products
    int8_dot: bool  # int8 dot-product instructions

    def describe(self) -> str:
        """One line for reports: the kernel level and what runs natively."""
        native = [name for name, has in (("bf16", self.bf16), ("fp16", self.fp16)) if has]
        int8 = "int8 dot products" if self.int8_dot else "no int8 dot products"
        floats = f"native {', '.join(native)}" if native else "no native bf16/fp16"
        line = f"CPU capability {self.capability}; {floats}; {int8}"
        amx = [kind for kind in AMX_FLAGS if onednn_uses_amx(kind)]
        if amx:
            line += f"; AMX for {', '.join(amx)}"
        limits = [f"{name}={os.environ[name]}" for name in ISA_LIMITS if os.environ.get(name)]
        if limits:
            line += f"; kernels held by {' '.join(limits)}"
        return line


@functools.cache
def cpu_precisions() -> CpuPrecisions:
    """This CPU's native precisions (measured once per process)."""
    return CpuPrecisions(
        capability=torch.backends.cpu.get_cpu_capability(),
        bf16=_onednn_says("_is_mkldnn_bf16_supported"),
        fp16=_onednn_says("_is_mkldnn_fp16_supported"),
        int8_dot=bool(cpu_flags() & INT8_DOT_FLAGS),
    )


def _onednn_says(check: str) -> bool:
    with contextlib.suppress(Exception):  # older torch or a build without oneDNN: not native
        return bool(getattr(torch.ops.mkldnn, check)())
    return False


def training_layout(device: torch.device) -> str:
    """The memory layout training steps ran faster in (``benchmarks/cpu_engine_forms.py
    --train``, the CPU recipe's network): channels_last where torch runs AVX-512 kernels
    (1.29-1.37x the default layout on an AVX-512 Xeon), the default layout on other CPUs
    (channels_last 0.52-0.94x on an AVX2-only EPYC; the Xeon held to AVX2 kernels gave
    1.09-1.10x, but has not an AVX2 PC's caches) and on GPUs, where it was not measured."""
    avx512 = cpu_precisions().capability.startswith("AVX512")
    return "channels_last" if device.type == "cpu" and avx512 else "contiguous"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name":
                return value.strip()
    return platform.processor() or "unknown"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """Instruction-set flags of the first CPU (``flags`` on x86, ``Features`` on Arm)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() in ("flags", "Features"):
                return frozenset(value.split())
    return frozenset()


def onednn_uses_amx(precision: str) -> bool:
    """Whether oneDNN may compute ``precision`` on AMX tiles here: the CPU has them, and
    ``ONEDNN_MAX_CPU_ISA``, where set, does not hold oneDNN below AMX."""
    if AMX_FLAGS.get(precision) not in cpu_flags():
        return False
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return limit in ("", "ALL", "DEFAULT") or "AMX" in limit


@functools.cache
def convolution_ms(dtype: torch.dtype) -> float:
    """Best of three calls of a 5x5 convolution, 64 to 64 channels on a 128x128 map in
    channels_last (3.4 GFLOP, the kind of layer most of PSIC-Net's CPU time goes to), in
    ms: a few tens of milliseconds, measured once per process."""
    generator = torch.Generator().manual_seed(0)
    layout = torch.channels_last
    x = torch.randn(1, 64, 128, 128, generator=generator).to(dtype).contiguous(memory_format=layout)
    weight = torch.randn(64, 64, 5, 5, generator=generator).to(dtype)
    weight = weight.contiguous(memory_format=layout)
    best = float("inf")
    with torch.inference_mode():
        F.conv2d(x, weight, padding=2)  # first call: oneDNN chooses and prepares its kernel
        for _ in range(3):
            began = time.perf_counter()
            F.conv2d(x, weight, padding=2)
            best = min(best, time.perf_counter() - began)
    return best * 1e3
