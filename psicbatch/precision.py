"""Numeric precisions: what ``auto`` means here, and whether a backend runs a precision on
a device (its table: ``engines.registry.SUPPORTED``). The one place train, eval,
build-engine, run and bench ask."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from psicbatch import hardware
from psicbatch.engines.registry import PRECISION_CHOICES, SUPPORTED
from psicbatch.errors import PsicbatchError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    grounds: str  # why, in a few words
    machine: str = ""  # the CPU description the grounds rest on, where they do

    @property
    def reason(self) -> str:
        """Recorded where users look: summaries, metadata, reports, manifests."""
        return f"{self.grounds} ({self.machine})" if self.machine else self.grounds

    def record(self) -> dict[str, str]:
        """As checkpoints keep it: what ran, and why."""
        return {"precision": self.precision, "reason": self.reason}


def cpu_auto() -> PrecisionChoice:
    """What ``auto`` means for torch on this CPU. Without native bf16, fp32 (emulated bf16
    runs about 6x slower); with AMX tiles, bf16 (a 5x5 convolution 8.8x fp32 on an AMX
    Xeon). Native bf16 without AMX went either way: 1.6x slower than fp32 on that Xeon
    with oneDNN held below AMX, while on an AMD EPYC with AVX-512 BF16 the bf16 engine ran
    the paper's network 2.7x faster than fp32 eager; there a convolution is timed in both
    (``hardware.convolution_ms``)."""
    native = hardware.cpu_precisions()
    where = native.describe()
    if not native.bf16:
        return PrecisionChoice("fp32", "auto: fp32, this CPU has no native bf16", where)
    if hardware.onednn_uses_amx("bf16"):
        return PrecisionChoice("bf16", "auto: bf16, computed in AMX tiles on this CPU", where)
    bf16_ms, fp32_ms = (hardware.convolution_ms(t) for t in (torch.bfloat16, torch.float32))
    timed = f"a 5x5 convolution took {bf16_ms:.1f} ms in bf16, {fp32_ms:.1f} ms in fp32"
    if bf16_ms < fp32_ms:
        return PrecisionChoice("bf16", f"auto: bf16, native and faster here ({timed})", where)
    return PrecisionChoice(
        "fp32", f"auto: fp32, faster than this CPU's native bf16 ({timed})", where
    )


def gpu_has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively (compute capability 8, Ampere, and
    later; ROCm GPUs). ``torch.cuda.is_bf16_supported()`` also counts emulated bf16,
    which on a T4 or V100 runs far slower than fp16."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def choose_precision(
    requested: str, backend: str, device: str | torch.device, training: bool = False
) -> PrecisionChoice:
    """The precision to run and why: ``requested``, checked against the table, or what
    ``auto`` means there. Training's ``auto`` on GPUs is bf16 where the GPU has it (no
    loss scaling needed), else fp16."""
    if requested not in PRECISION_CHOICES:
        raise PsicbatchError(
            f"unknown precision {requested!r}; choose one of {', '.join(PRECISION_CHOICES)}"
        )
    device_type = torch.device(device).type
    supported = SUPPORTED[backend].get(device_type)
    if supported is None:
        places = " or ".join(SUPPORTED[backend])
        raise PsicbatchError(f"the {backend} backend runs on {places}, not on {device_type}")
    if requested == "auto":
        if backend == "torch" and device_type == "cpu":
            return cpu_auto()
        if training and device_type == "cuda":
            bf16 = gpu_has_native_bf16(torch.device(device))
            return PrecisionChoice(
                "bf16" if bf16 else "fp16",
                "auto: bf16, native on this GPU" if bf16 else "auto: fp16, this GPU lacks bf16",
            )
        return PrecisionChoice(
            supported[0], f"auto: {supported[0]} with {backend} on {device_type}"
        )
    if requested not in supported:
        raise PsicbatchError(
            f"--precision {requested} is not available with the {backend} backend on "
            f"{device_type}; choose one of {', '.join(sorted(supported))}"
        )
    return PrecisionChoice(requested, "as requested")


def resolve_precision(
    requested: str, backend: str, device: str | torch.device, training: bool = False
) -> str:
    """``choose_precision`` without the reason."""
    return choose_precision(requested, backend, device, training).precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` for torch models (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])
