"""Counts in words for the lines and pages people read: ``1 error``, ``3 errors``."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, in the plural (``plural``, else ``noun`` + s) unless one."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
