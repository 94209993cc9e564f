"""What a run is asked to do, checked once where it is made.

Its own module so that the executors and workers can name the type without importing
the runner that imports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psicbatch.decisions import Rule
from psicbatch.errors import PsicbatchError
from psicbatch.paths import FileSnapshot
from psicbatch.run.files import FileLimits

MASK_MODES = ("gated", "all")
DECODERS = ("auto", "dali", "pil")  # and "null", which only benchmarks use
DEFAULT_BATCH_SIZE = 8  # also the batch TensorRT engines are tuned for
DEFAULT_BATCH_TIMEOUT = 600.0


@dataclass(frozen=True)
class RunOptions:
    out: Path
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = 1  # worker processes: in all on the CPU, per GPU with devices
    devices: tuple[str, ...] = ()  # "cpu" or "cuda:N"; empty: every GPU (a watch: the first)
    decoder: str = "auto"
    threshold: float | None = None  # overrides the engine's image threshold
    rule: Rule = field(default_factory=Rule)  # the image decision (a decision file's rule)
    decisions: dict[str, Any] | None = None  # the decision file applied, as recorded
    roi: FileSnapshot | None = None  # region of interest (as read): defects outside it are removed
    masks: str = "gated"  # gated: masks only for images judged defective; all: every mask
    resume: bool = False
    overwrite: bool = False  # replace an earlier psicbatch results file at ``out``
    sources: tuple[str, ...] = ()  # resolved sources, the job's identity (job.resolved_sources)
    list_file: Path | None = None  # never overwritten by ``out``
    part_rows: int = 1024
    batch_timeout: float = DEFAULT_BATCH_TIMEOUT
    limits: FileLimits = field(default_factory=FileLimits)  # per file: bytes, decode seconds

    def __post_init__(self) -> None:
        """The command line checks each option's range; this keeps library callers to
        the same rules, with the same one-line messages."""
        counts = (self.batch_size, self.workers, self.part_rows)
        if not all(isinstance(count, int) for count in counts):
            raise PsicbatchError("--batch-size, --workers and --flush-every must be whole numbers")
        if min(counts) < 1:
            raise PsicbatchError("--batch-size, --workers and --flush-every must be at least 1")
        if self.masks not in MASK_MODES:
            raise PsicbatchError(f"--masks must be one of {', '.join(MASK_MODES)}")
        if self.decoder not in (*DECODERS, "null"):
            raise PsicbatchError(f"--decoder must be one of {', '.join(DECODERS)}")
        seconds = (self.batch_timeout, self.limits.decode_seconds)
        if not all(math.isfinite(s) and s > 0 for s in seconds):
            raise PsicbatchError("--batch-timeout and --decode-timeout must be positive and finite")
        if self.limits.max_bytes < 1:
            raise PsicbatchError("--max-file-size must be positive")
        if self.threshold is not None and not 0 <= self.threshold <= 1:  # NaN fails too
            raise PsicbatchError(f"--threshold must lie in [0, 1], got {self.threshold}")
