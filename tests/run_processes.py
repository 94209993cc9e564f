"""Real ``psicbatch run`` processes for the tests that stop, kill or hang them: starting a
run, waiting on its saved parts and its worker processes, killing it mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from psicbatch.checkpoint import save_checkpoint, untrained_checkpoint
from psicbatch.model import ModelConfig

CONSOLE = Path(sys.executable).parent / "psicbatch"
FAST = ["--decoder", "pil", "--precision", "fp32", "--device", "cpu", "-q"]
STARTUP_SECONDS = 120
IMAGES = 600


def many_images(folder: Path) -> Path:
    """Enough small images that a run lasts well past its first saved rows, in
    ``folder/images``, and beside them a small model to run them with (``run_options``):
    the runs here are about stopping, not the network, which would take most of their
    time at the demo model's size."""
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(
            images / f"{i:04d}.png", compress_level=0
        )
    save_checkpoint(untrained_checkpoint(ModelConfig(width=0.125), (64, 64)), folder / "model.pt")
    return images


def run_options(images: Path) -> list[object]:
    """The options of every run of ``many_images``: the same for a run and its resume."""
    return [*FAST, "--model", images.parent / "model.pt"]


def start(images: Path, out: Path, *args: str, **popen: object) -> subprocess.Popen:
    return subprocess.Popen(
        [CONSOLE, "run", images, "--out", out, *run_options(images), "--flush-every", "8", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def wait_for(
    condition: object, seconds: float = STARTUP_SECONDS, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.stderr.read().decode()}")
        time.sleep(0.05)


def saved_parts(out: Path) -> int:
    return len(list(out.with_name(out.name + ".parts").glob("part-*.parquet")))


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (of any of its threads), still running."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += map(int, (task / "children").read_text().split())
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: its children, theirs, and so on."""
    return [found for child in children(pid) for found in (child, *descendants(child))]


def command_line(pid: int) -> bytes:
    """The process's command line as it shows it (Ray's processes rename themselves)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def workers_of(pid: int) -> list[int]:
    """The spawned worker processes of ``pid`` (not multiprocessing's resource tracker)."""
    return [child for child in children(pid) if b"spawn_main" in command_line(child)]


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
