"""A real ``psicbatch run`` killed with SIGKILL once it has saved some rows: the start of
every resume test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CONSOLE = Path(sys.executable).parent / "psicbatch"


def killed_run(arguments: list[object], out: Path, parts: int = 2, seconds: float = 120) -> Path:
    """Run ``psicbatch run ARGUMENTS --out OUT`` and kill its whole process group as soon
    as ``parts`` part files are saved; returns ``OUT.parts``."""
    process = subprocess.Popen([CONSOLE, "run", *arguments, "--out", out], start_new_session=True)
    folder = out.with_name(out.name + ".parts")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(list(folder.glob("part-*.parquet"))) < parts:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists(), "the run finished before it could be killed"
    return folder
