"""Folders the system refuses to list, for tests that run as root (which lists any)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest


def refuse_listing(monkeypatch: pytest.MonkeyPatch, refused: list[Path]) -> None:
    """``os.scandir`` of a folder in ``refused`` (changed as the test goes) fails as it does
    for a folder of mode 000 to anyone but root."""
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if not isinstance(path, int) and Path(os.fsdecode(path)) in refused:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
