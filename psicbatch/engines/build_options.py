"""What a build is asked to do, with its defaults, checked once where it is made.

Field names are the command line's option names (``--max-batch`` is ``max_batch``), so
``build-engine`` passes its options straight through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from psicbatch.engines.image_sets import PARITY_COUNT
from psicbatch.engines.parity import MIN_MASK_IOU
from psicbatch.engines.registry import NAMES
from psicbatch.engines.tuning import TUNE_SECONDS
from psicbatch.errors import PsicbatchError
from psicbatch.precision import CHOICES

BACKENDS = ("auto", *NAMES)


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
        if self.precision not in CHOICES:
            raise PsicbatchError(
                f"unknown --precision {self.precision!r}; choose one of {', '.join(CHOICES)}"
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
