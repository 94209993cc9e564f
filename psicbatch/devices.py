"""One device syntax for every command's ``--device``.

``auto`` (the first GPU when one is visible, else the CPU), ``cpu``, ``cuda``, ``cuda:N``
or ``N``; where a command runs several workers (``run``) also a list of GPUs (``0,1``,
``cuda:0,cuda:1``) or ``all``, and there ``auto`` is every visible GPU (``every_gpu``).
Every form resolves to ``cpu`` or ``cuda:N``, checked against the GPUs visible here, so a
typo fails in one line before any work starts.

torch is imported only when a device is resolved: declaring ``--device`` (and every
command's ``--help``) does not pay the second it takes to import.
"""

from __future__ import annotations

import importlib.metadata

from psicbatch.errors import PsicbatchError

DEVICE_HELP = "auto, cpu, cuda, cuda:N or N"
DEVICES_HELP = f"{DEVICE_HELP}, or GPUs as 0,1 or all"
AUTO = "auto"


def default_device() -> str:
    """The first GPU when one is visible, else the CPU."""
    if cpu_build_of_torch():  # sees no GPU: known without importing torch
        return "cpu"
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def every_gpu() -> tuple[str, ...]:
    """Every visible GPU of the first one's kind (name and compute capability), else the
    CPU: where a run puts its workers by default. A run is a throughput job (its images
    are independent), so a GPU server's other GPUs would only sit idle beside the first;
    GPUs of another kind are left out, since a TensorRT engine runs only on the kind it
    was built on and a workstation's display GPU would hold its batches back (CUDA
    numbers the fastest GPU first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``). A
    scheduler's ``CUDA_VISIBLE_DEVICES`` still limits them, and ``--device`` names any."""
    if cpu_build_of_torch():
        return ("cpu",)
    import torch

    if not torch.cuda.is_available():
        return ("cpu",)

    def kind(index: int) -> tuple[str, tuple[int, int]]:
        return torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index)

    first = kind(0)
    return tuple(
        f"cuda:{index}" for index in range(torch.cuda.device_count()) if kind(index) == first
    )


def cpu_build_of_torch() -> bool:
    """Whether the installed torch is a CPU-only build (PyTorch's ``+cpu`` wheels), read
    from its version, so that ``--device auto`` on a CPU machine leaves importing torch
    to the work itself and a command's own checks answer at once. Other builds (CUDA,
    ROCm, unlabelled) are asked whether they see a GPU."""
    try:
        return importlib.metadata.version("torch").endswith("+cpu")
    except importlib.metadata.PackageNotFoundError:
        return False


def parse_devices(value: str) -> tuple[str, ...]:
    """Every device ``value`` names, as ``cpu`` or ``cuda:N`` (see the module's syntax)."""
    if _is_auto(value):
        return (default_device(),)
    text = value.strip().lower()
    if text == "cpu":
        return ("cpu",)
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if text == "all":
        if not visible:
            raise PsicbatchError("device 'all': no GPU is visible here")
        return tuple(f"cuda:{index}" for index in range(visible))
    devices = tuple(_gpu(part.strip(), value, visible) for part in text.split(","))
    if len(set(devices)) != len(devices):
        raise PsicbatchError(f"device {value!r}: a GPU is named twice")
    return devices


def run_devices(value: str) -> tuple[str, ...]:
    """The devices ``run``'s ``--device`` names, as ``parse_devices`` gives them, but
    ``auto`` left empty for what runs to choose: a run every visible GPU
    (``every_gpu``), a watch, which runs on one device, the first."""
    return () if _is_auto(value) else parse_devices(value)


def _is_auto(value: str) -> bool:
    return value.strip().lower() in ("", AUTO)


def resolve_device(value: str) -> str:
    """The one device ``value`` names, for commands that run on one device."""
    devices = parse_devices(value)
    if len(devices) > 1:
        raise PsicbatchError(f"device {value!r}: this command runs on one device")
    return devices[0]


def _gpu(part: str, value: str, visible: int) -> str:
    number = part.removeprefix("cuda").removeprefix(":") or "0"
    if not number.isdigit():
        raise PsicbatchError(f"device {value!r}: expected {DEVICES_HELP}")
    if int(number) >= visible:
        seen = f"{visible} GPUs are visible" if visible else "no GPU is visible"
        raise PsicbatchError(f"device {value!r}: GPU {int(number)} does not exist here ({seen})")
    return f"cuda:{int(number)}"
