"""The type of the ``stall_reads`` fixture (``conftest``): reads that wait, as on a
network share that stopped answering."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

StallReads = Callable[[object, str, Path], None]  # (module, function name, the path stalled)
