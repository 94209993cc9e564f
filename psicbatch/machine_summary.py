"""What ``psicbatch info`` (no path) shows of this machine: what psicbatch detects here
and what it will therefore do, with why.

Defaults depend on the hardware (the CPU's instructions decide the torch precision and how
conv10 is computed; the GPUs, TensorRT and DALI decide the engine and the decoder), and
libraries can be installed without working (TensorRT's bindings without its libraries;
DALI built for another CUDA than torch's). A user setting up a line machine sees all of
that in one table before building an engine, instead of in a run's first error.
"""

from __future__ import annotations

import importlib
import os
import platform
from typing import Any

import torch

from psicbatch import __version__, hardware, pixel_limit, read_limit
from psicbatch.cpus import cpus_line
from psicbatch.data.images import MAX_PIXELS, READ_SECONDS
from psicbatch.devices import default_device, every_gpu
from psicbatch.engines.build import tensorrt_usable
from psicbatch.engines.frequency_conv import large_kernel_method
from psicbatch.engines.fused_relu import fusion_works
from psicbatch.engines.registry import BACKENDS, Backend
from psicbatch.engines.tuning import cpu_candidates
from psicbatch.precision import DTYPES, cpu_auto, gpu_has_native_bf16
from psicbatch.run.decode import DALI_BUILDS, dali_available
from psicbatch.versions import NOT_INSTALLED, installed_versions
from psicbatch.wording import counted


def machine_summary() -> dict[str, Any]:
    """Every field of the table, in the order a person checks them."""
    cpu_choice = cpu_auto()
    cpu = torch.device("cpu")
    fused = fusion_works(DTYPES[cpu_choice.precision])
    return {
        "psicbatch": __version__,
        "python": platform.python_version(),
        "torch": torch_build(),
        "cpu": hardware.cpu_model(),
        "cpus": f"{cpus_line()}; torch runs {counted(torch.get_num_threads(), 'thread')}",
        "cpu instructions": hardware.cpu_precisions().describe(),
        "torch on the cpu": cpu_choice.grounds,  # the instruction line is just above
        "conv10 on the cpu": (
            f"{large_kernel_method(cpu, cpu_choice.precision)} in {cpu_choice.precision}"
        ),
        "relu on the cpu": (
            "inside each convolution (oneDNN's fused operator passed its check here)"
            if fused
            else "separate from the convolutions (oneDNN's fused operator failed its check here)"
        ),
        "training layout on the cpu": hardware.training_layout(cpu),  # inference: channels_last
        "gpus": gpus(),
        "default device": default_device(),
        "run's default devices": ", ".join(every_gpu()),
        "dali": dali_status(),
        **{f"backend {name}": backend_status(entry) for name, entry in BACKENDS.items()},
        "build-engine auto": engine_choice(),
        "ray": _version_or_hint("ray", "pip install 'psicbatch[ray]' for run --executor ray"),
        "limits": limits(),
    }


def limits() -> str:
    """The limits every reader applies, and the variables that move them."""
    return (
        f"images up to {MAX_PIXELS / 1e6:g} megapixels ({pixel_limit.VARIABLE}); "
        f"a dataset's file read, a path or folder looked at, within {READ_SECONDS:g} s "
        f"({read_limit.VARIABLE})"
    )


def torch_build() -> str:
    """torch's version and the GPU platform it is built for."""
    if torch.version.cuda:
        return f"{torch.__version__} (built for CUDA {torch.version.cuda})"
    if torch.version.hip:
        return f"{torch.__version__} (built for ROCm {torch.version.hip})"
    return f"{torch.__version__} (CPU only)"


def gpus() -> list[str] | str:
    """Each visible GPU as ``cuda:N name, memory, compute capability, bf16``; else why none."""
    if not torch.version.cuda and not torch.version.hip:
        return "none: this torch is built without CUDA"
    if not torch.cuda.is_available():
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        if hidden is not None:
            return f"none visible (CUDA_VISIBLE_DEVICES={hidden!r})"
        return "none visible: no GPU or driver answered this torch"
    described = []
    for index in range(torch.cuda.device_count()):
        device = torch.device("cuda", index)
        properties = torch.cuda.get_device_properties(device)
        bf16 = "native bf16" if gpu_has_native_bf16(device) else "no native bf16: fp16"
        described.append(
            f"cuda:{index} {properties.name}, {properties.total_memory / 2**30:.1f} GiB, "
            f"compute {properties.major}.{properties.minor}, {bf16}"
        )
    return described


def dali_status() -> str:
    """The DALI wheel installed and whether its CUDA is torch's: a wheel built for another
    CUDA major version fails on the GPU, while ``auto`` would pick it there."""
    versions = {
        name: v for name, v in installed_versions(DALI_BUILDS).items() if v != NOT_INSTALLED
    }
    if not versions or not dali_available():
        return f"{NOT_INSTALLED}: run decodes with PIL (pip install 'psicbatch[dali]' for GPUs)"
    return "; ".join(
        dali_note(name, version, torch.version.cuda) for name, version in versions.items()
    )


def dali_note(package: str, version: str, torch_cuda: str | None) -> str:
    """One DALI wheel, and what it means next to torch's CUDA (None: a CPU-only torch)."""
    cuda, _ = DALI_BUILDS[package]
    line = f"{package} {version}"
    if torch_cuda is None:
        return f"{line}: its CPU operators only (this torch has no CUDA); run uses PIL on the CPU"
    torch_major = torch_cuda.split(".")[0]
    if torch_major != cuda:
        extra = next((extra for c, extra in DALI_BUILDS.values() if c == torch_major), None)
        fix = f": pip install 'psicbatch[{extra}]'" if extra else ""
        return f"{line}: built for CUDA {cuda}, torch for CUDA {torch_major}{fix}"
    return f"{line}: decodes on GPUs (--decoder auto)"


def backend_status(entry: Backend) -> str:
    """Installed or not (with the extra that installs it), whether it imports, and what
    it runs where."""
    runs = "; ".join(f"{device} {', '.join(p)}" for device, p in entry.precisions.items())
    problem = entry.problem()
    if problem is not None:
        return f"{problem}; runs {runs}"
    module = importlib.import_module(entry.modules[0])  # imported by problem() already
    line = f"{getattr(module, '__version__', '?')}; runs {runs}"
    if entry.name == "onnxruntime":
        line += f"; providers {', '.join(module.get_available_providers())}"
    return line


def engine_choice() -> str:
    """What ``build-engine`` with ``--backend auto`` does on this machine's default device."""
    device = default_device()
    if device.startswith("cuda"):
        if tensorrt_usable(device):
            return f"TensorRT on {device}"
        return f"torch fp16 on {device} (TensorRT does not load here)"
    timed = ", ".join(candidate.label for candidate in cpu_candidates(calibrated=False))
    int8 = "first" if hardware.cpu_precisions().int8_dot else "last: no int8 dot products here"
    return f"times {timed} on this CPU and keeps the fastest (with --calib int8 too, {int8})"


def _version_or_hint(package: str, hint: str) -> str:
    version = installed_versions([package])[package]
    return hint if version == NOT_INSTALLED else version
