"""What a build is asked to do, with its defaults, checked once where it is made.

Field names are the command line's option names (``--max-batch`` is ``max_batch``), so
``build-engine`` passes its options straight through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from psicbatch.engines.registry import NAMES, PRECISION_CHOICES
from psicbatch.errors import PsicbatchError

BACKENDS = ("auto", *NAMES)
PARITY_COUNT = 32  # parity images at most, spread over the folder given
SYNTHETIC = "synthetic"  # the parity source where no folder of images is given
MIN_MASK_IOU = 0.9  # least mean mask IoU against the fp32 model for an engine to be kept
TUNE_SECONDS = 60.0  # budget for building and timing the candidates of a CPU's auto choice


@dataclass(frozen=True)
class BuildOptions:
    backend: str = "auto"
    precision: str = "auto"
    input_size: tuple[int, int] | None = None  # default: the checkpoint's training size
    max_batch: int = 16
    calib: Path | None = None
    parity_images: Path | None = None  # default: held out of calib, else synthetic
    parity_count: int = PARITY_COUNT
    out: Path | None = None
    overwrite: bool = False  # replace an earlier engine folder at out (engines.destination)
    dynamic_size: bool = True
    threads: int = 0
    compile: bool = False
    workspace_gb: float = 4.0
    cache_dir: Path | None = None  # TensorRT timing cache; default: beside the engine folder
    check_parity: bool = True
    min_mask_iou: float = MIN_MASK_IOU
    tune: bool = True  # auto on a CPU: time the candidates (False: the rule of thumb)
    tune_seconds: float = TUNE_SECONDS
    device: str = "auto"  # where the engine is built, timed and checked (psicbatch.devices)

    def __post_init__(self) -> None:
        """The command line checks each option's range; this keeps library callers to
        the same rules, with the same one-line messages."""
        if self.backend not in BACKENDS:
            raise PsicbatchError(
                f"unknown --backend {self.backend!r}; choose one of {', '.join(BACKENDS)}"
            )
        if self.precision not in PRECISION_CHOICES:
            raise PsicbatchError(
                f"unknown --precision {self.precision!r}; "
                f"choose one of {', '.join(PRECISION_CHOICES)}"
            )
        if self.max_batch < 1 or self.parity_count < 1 or self.threads < 0:
            raise PsicbatchError(
                "--max-batch and --parity-count must be at least 1, --threads at least 0"
            )
        if not (math.isfinite(self.workspace_gb) and self.workspace_gb > 0):
            raise PsicbatchError("--workspace-gb must be positive and finite")
        if not (math.isfinite(self.tune_seconds) and self.tune_seconds > 0):
            raise PsicbatchError("--tune-seconds must be positive and finite")
        if not self.min_mask_iou >= 0:  # NaN fails too; above 1 fails every parity check
            raise PsicbatchError(f"--min-mask-iou must be at least 0, got {self.min_mask_iou}")
