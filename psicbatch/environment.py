"""Limits set in the environment rather than as options: every reader, and every worker
process a run starts, applies them without being handed them."""

from __future__ import annotations

import math
import os

from psicbatch.errors import PsicbatchError


def positive_number(variable: str, default: float, unit: str) -> float:
    """The variable's value, or ``default`` where it is unset or blank; a value that is
    not a positive number (of ``unit``) is a one-line error."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise PsicbatchError(f"{variable}={text}: not a positive number of {unit}")
    return value
