"""The machine a benchmark ran on, and what is known to run faster on it."""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from psicbatch import __version__
from psicbatch.cpus import available_cpus, cpu_quota
from psicbatch.engines.manifest import Manifest
from psicbatch.engines.registry import BACKENDS, all_packages
from psicbatch.hardware import cpu_model, cpu_precisions
from psicbatch.precision import cpu_auto
from psicbatch.run.decode import DALI_BUILDS
from psicbatch.versions import installed_versions

BENCH_LIBRARIES = ("numpy", "pillow", "pyarrow", *DALI_BUILDS, *all_packages())


def driver_used_mib(device: str) -> float:
    """What the driver counts as used on ``device`` now (every process and library:
    cuDNN workspaces, TensorRT, ONNX Runtime, DALI), in MiB."""
    free, total = torch.cuda.mem_get_info(torch.device(device))
    return (total - free) / 2**20


class DriverMemorySampler:
    """The most memory the driver counted in use while a benchmark ran, read every
    ``interval`` seconds in a thread beside it: torch's own peak misses cuDNN's workspaces
    and other libraries' memory, and one reading at the end misses the peak. Without a
    ``read`` (on a CPU) it samples nothing."""

    def __init__(self, read: Callable[[], float] | None, interval: float = 0.05) -> None:
        self.read, self.interval = read, interval
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="memory sampler", daemon=True)

    def __enter__(self) -> DriverMemorySampler:
        if self.read is not None:
            self._take()
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.read is not None:
            self._stop.set()
            self._thread.join()
            self._take()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def _take(self) -> None:
        assert self.read is not None
        reading = self.read()
        self.peak_mib = reading if self.peak_mib is None else max(self.peak_mib, reading)


def resident_mib(pid: int | str = "self", field: str = "VmRSS") -> float | None:
    """What process ``pid`` holds in memory now (VmRSS, Linux), or its peak since it began
    (``field="VmHWM"``: unlike ru_maxrss, never a parent's), in MiB; None once it has
    ended or where /proc has no such field."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def memory_peak(driver_peak_mib: float | None = None) -> dict[str, float | None]:
    """Peak resident memory of this process and, on a GPU, what torch's allocator peaked
    at and reserved, the most the driver counted in use on the device while sampled, and
    what it counts now, in MiB."""
    import resource

    peak: dict[str, float | None] = {
        "host_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gpu_mib": None,
        "gpu_reserved_mib": None,
        "gpu_driver_peak_mib": driver_peak_mib,
        "gpu_driver_used_mib": None,
    }
    if torch.cuda.is_available():
        peak["gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        peak["gpu_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
        peak["gpu_driver_used_mib"] = driver_used_mib("cuda")
    return peak


def machine() -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "isa": cpu_precisions().describe(),
        "cores": os.cpu_count(),
        "cpus_available": available_cpus(),  # affinity, lowered to a CPU quota
        "cpu_quota": cpu_quota(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "psicbatch": __version__,
        "libraries": installed_versions(BENCH_LIBRARIES),
    }


def faster_configuration_advice(manifest: Manifest, device: str) -> str | None:
    """A configuration faster on this machine than the one measured, where one is known:
    the fastest engine of a measured build's table (a measurement beats a rule), else
    torch's native precision here."""
    if device != "cpu":
        return None
    timed = [t for t in manifest.tuning or [] if t.get("seconds_per_image")]
    if timed:
        fastest = min(timed, key=lambda t: t["seconds_per_image"])
        if (fastest["backend"], fastest["precision"]) != (manifest.backend, manifest.precision):
            return (
                f"{fastest['backend']} {fastest['precision']} was the fastest engine measured "
                "when this engine was built (build-engine --backend auto --precision auto)"
            )
        return None
    if manifest.backend == "torch" and manifest.precision != cpu_auto().precision:
        best = cpu_auto()
        return (
            f"--precision {best.precision} is faster than {manifest.precision} here ({best.reason})"
        )
    if manifest.backend == "torch":
        others = [
            name
            for name, entry in BACKENDS.items()
            if name != "torch" and "cpu" in entry.precisions and entry.installed()
        ]
        if others:
            return (
                "not measured: a built engine may be faster on this CPU "
                f"({' and '.join(others)} are installed); 'psicbatch build-engine MODEL' "
                "times every candidate here and keeps the fastest"
            )
    return None
