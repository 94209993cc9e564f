"""The commit a checkout is at, recorded beside a benchmark's figures."""

from __future__ import annotations

import subprocess
from pathlib import Path


def commit_of(checkout: Path) -> str:
    """``git rev-parse --short HEAD`` in ``checkout``; "unknown" outside a git checkout."""
    finished = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return finished.stdout.strip() or "unknown"
