"""psicbatch: train, compile and run PSIC-Net for batch surface-defect inspection.

``psicbatch.Inspector`` is the Python API (see ``psicbatch.api``); it is imported on first
use, so ``import psicbatch`` stays light for the command line.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("Inspector", "Inspection", "Tiles", "part_decision"):
        from psicbatch import api

        return getattr(api, name)
    raise AttributeError(f"module 'psicbatch' has no attribute {name!r}")
