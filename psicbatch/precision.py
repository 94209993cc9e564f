"""Numeric precisions: which ones each backend runs on which device, and what ``auto``
means. The one place train, eval, build-engine, run and bench ask."""

from __future__ import annotations

import contextlib

import torch

from psicbatch.errors import PsicbatchError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
CHOICES = ("auto", *PRECISIONS)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# backend -> device type -> (precisions it runs, the first being what ``auto`` picks).
# Inference: bf16 is the fastest torch option on CPUs with AVX-512 BF16 (2.5x ONNX Runtime
# fp32, benchmarks/results/cpu-backends/); fp16 is the GPU engines' usual choice. OpenVINO
# is psicbatch's CPU int8 runtime (benchmarks/results/cpu-int8/).
SUPPORTED = {
    "torch": {"cpu": ("bf16", "fp32"), "cuda": ("fp16", "bf16", "fp32")},
    "onnxruntime": {"cpu": ("fp32", "int8"), "cuda": ("fp32", "int8")},
    "openvino": {"cpu": ("int8",)},
    "tensorrt": {"cuda": ("fp16", "fp32", "bf16", "int8")},
}
TORCH_CHOICES = ("auto", *sorted(set(SUPPORTED["torch"]["cpu"] + SUPPORTED["torch"]["cuda"])))


def resolve_precision(
    requested: str, backend: str, device: str | torch.device, training: bool = False
) -> str:
    """The precision to run: ``requested``, checked against the table, or what ``auto``
    means there. Training's ``auto`` is bf16 wherever the hardware has it (no loss
    scaling needed), fp16 on older GPUs."""
    if requested not in CHOICES:
        raise PsicbatchError(f"unknown precision {requested!r}; choose one of {', '.join(CHOICES)}")
    device_type = torch.device(device).type
    supported = SUPPORTED[backend].get(device_type)
    if supported is None:
        places = " or ".join(SUPPORTED[backend])
        raise PsicbatchError(f"the {backend} backend runs on {places}, not on {device_type}")
    if requested == "auto":
        if training:
            cuda = device_type == "cuda"
            return "fp16" if cuda and not torch.cuda.is_bf16_supported() else "bf16"
        return supported[0]
    if requested not in supported:
        raise PsicbatchError(
            f"--precision {requested} is not available with the {backend} backend on "
            f"{device_type}; choose one of {', '.join(sorted(supported))}"
        )
    return requested


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` for torch models (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])
