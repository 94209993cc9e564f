"""Every engine backend psicbatch knows, in one table.

CLI choices, precision checks, the automatic and measured engine choices, library
version records and install hints all derive from ``BACKENDS``: adding a backend means
writing its module (engine class and builder) and adding one entry here.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from psicbatch.errors import PsicbatchError, error_line


@dataclass(frozen=True)
class Backend:
    name: str
    module: str  # holds the engine class and the builder
    engine_class: str
    builder: str
    # device type -> precisions it runs; on GPUs the first is what ``auto`` picks
    precisions: dict[str, tuple[str, ...]]
    modules: tuple[str, ...]  # Python modules it imports (installed or not)
    packages: tuple[str, ...]  # distributions whose versions a manifest records
    extra: str  # pip extra that installs it
    from_onnx: bool  # built from psicbatch's exported ONNX graph
    cpu_int8: bool = False  # a CPU int8 runtime (order in BACKENDS: fastest first)

    def installed(self) -> bool:
        return all(importlib.util.find_spec(module) is not None for module in self.modules)

    def problem(self) -> str | None:
        """Why this backend cannot run here, or None: not installed, or installed without
        what it loads (TensorRT's bindings install where its libraries do not)."""
        if not self.installed():
            return f"not installed ({self.install_hint})"
        try:
            for module in self.modules:
                importlib.import_module(module)
        except (ImportError, OSError) as error:
            return f"installed, but does not load ({error_line(error)})"
        return None

    def load(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.module), attribute)

    @property
    def install_hint(self) -> str:
        return f"pip install 'psicbatch[{self.extra}]'"


_ONNX = ("torch", "onnx", "onnxruntime")
BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend(
            name="tensorrt",
            module="psicbatch.engines.tensorrt_engine",
            engine_class="TensorRTEngine",
            builder="build_tensorrt",
            precisions={"cuda": ("fp16", "fp32", "bf16", "int8")},
            modules=("tensorrt",),
            packages=(*_ONNX, "tensorrt"),
            extra="tensorrt",
            from_onnx=True,
        ),
        Backend(
            name="openvino",
            module="psicbatch.engines.openvino_engine",
            engine_class="OpenVinoEngine",
            builder="build_openvino",
            precisions={"cpu": ("int8", "fp32")},
            modules=("openvino", "onnx"),
            packages=(*_ONNX, "openvino"),
            extra="openvino",
            from_onnx=True,
            cpu_int8=True,
        ),
        Backend(
            name="onnxruntime",
            module="psicbatch.engines.ort_engine",
            engine_class="OnnxRuntimeEngine",
            builder="build_onnxruntime",
            # The CUDA provider runs QDQ int8 graphs in float: int8 there is no int8.
            precisions={"cpu": ("fp32", "int8"), "cuda": ("fp32",)},
            modules=("onnxruntime", "onnx"),
            packages=_ONNX,
            extra="onnx",
            from_onnx=True,
            cpu_int8=True,
        ),
        Backend(
            name="torch",
            module="psicbatch.engines.torch_engine",
            engine_class="TorchEngine",
            builder="build_torch",
            precisions={"cpu": ("fp32", "bf16"), "cuda": ("fp16", "bf16", "fp32")},
            modules=("torch",),
            packages=("torch",),
            extra="",
            from_onnx=False,
        ),
    )
}
NAMES = tuple(BACKENDS)
CPU_INT8_BACKENDS = tuple(name for name, backend in BACKENDS.items() if backend.cpu_int8)


PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: What ``--precision`` takes: ``auto`` (see ``psicbatch.precision``) or a precision.
PRECISION_CHOICES = ("auto", *PRECISIONS)
# backend -> device type -> (precisions it runs; on GPUs the first is what ``auto``
# picks). On CPUs ``auto`` asks the hardware (``cpu_auto``): torch bf16 only where the CPU
# has native bf16 (it is then the fastest torch option, 2.5x ONNX Runtime fp32 on AVX-512
# BF16, benchmarks/results/cpu-backends/), else fp32 (bf16 is about 6x slower than fp32
# on AVX2-only CPUs). OpenVINO is psicbatch's CPU int8 runtime (benchmarks/results/cpu-int8/)
# and also runs fp32.
SUPPORTED = {name: backend.precisions for name, backend in BACKENDS.items()}
#: What runs of a checkpoint with torch take (no int8).
TORCH_PRECISION_CHOICES = (
    "auto",
    *sorted(set(SUPPORTED["torch"]["cpu"] + SUPPORTED["torch"]["cuda"])),
)


def backend(name: str, where: object = "engine") -> Backend:
    """The table entry for ``name``, or a one-line error naming ``where`` it came from."""
    if name not in BACKENDS:
        raise PsicbatchError(f"{where}: unknown engine backend {name!r}; known: {', '.join(NAMES)}")
    return BACKENDS[name]


def installed_cpu_int8() -> list[str]:
    """The CPU int8 runtimes installed here, fastest first."""
    return [name for name in CPU_INT8_BACKENDS if BACKENDS[name].installed()]


def all_packages() -> tuple[str, ...]:
    """Every distribution any backend records, each once, in table order."""
    return tuple(dict.fromkeys(p for b in BACKENDS.values() for p in b.packages))
