"""A run stops cleanly however it is stopped: a hung worker, Ctrl-C, SIGTERM, a full disk,
or its parent killed. Each case runs the console command in a subprocess with a timeout,
so a regression fails instead of hanging the suite."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

CONSOLE = Path(sys.executable).parent / "psicbatch"
FAST = ["--decoder", "pil", "--precision", "fp32", "--devices", "cpu", "-q"]
STARTUP_SECONDS = 120
IMAGES = 600


@pytest.fixture(scope="module")
def many_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough small images that a run lasts well past its first saved rows."""
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(
            folder / f"{i:04d}.png", compress_level=0
        )
    return folder


def start(folder: Path, out: Path, *args: str, **popen: object) -> subprocess.Popen:
    return subprocess.Popen(
        [CONSOLE, "run", folder, "--out", out, *FAST, "--flush-every", "8", *args],
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


def workers_of(pid: int) -> list[int]:
    """The spawned worker processes of ``pid`` (not multiprocessing's resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in command:
                found.append(child)
    return found


def test_a_hung_worker_ends_the_process_within_seconds(many_images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    process = start(many_images, out, "--workers", "2", "--batch-size", "1", "--batch-timeout", "5")
    try:
        wait_for(lambda: saved_parts(out) >= 1, process=process)
        workers = workers_of(process.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGSTOP)  # hung: alive, but never answers again
        stopped_at = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 1
        assert time.monotonic() - stopped_at < 30
        assert b"no result from any worker for 5 s" in stderr, stderr
        assert b"terminate called" not in stderr
        wait_for(lambda: not any(map(alive, workers)), 10)
    finally:
        process.kill()


def test_workers_end_when_the_main_process_is_killed(many_images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    process = start(many_images, out, "--workers", "2", "--batch-size", "1")
    try:
        wait_for(lambda: len(workers_of(process.pid)) == 2, process=process)
        workers = workers_of(process.pid)
        process.kill()  # SIGKILL: the main process runs no code of its own to stop them
        process.wait()
        wait_for(lambda: not any(map(alive, workers)), 15)
    finally:
        process.kill()


@pytest.mark.parametrize(
    ("stop", "workers", "code"),
    [(signal.SIGINT, "1", 130), (signal.SIGTERM, "1", 143), (signal.SIGINT, "2", 130)],
)
def test_a_signal_saves_what_is_done_and_exits_with_its_code(
    many_images: Path, tmp_path: Path, stop: int, workers: str, code: int
) -> None:
    out = tmp_path / "r.parquet"
    process = start(many_images, out, "--workers", workers, start_new_session=True)
    try:
        wait_for(lambda: saved_parts(out) >= 1, process=process)
        os.killpg(process.pid, stop)  # as a terminal's Ctrl-C: the whole process group
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == code, stderr
    name = signal.Signals(stop).name
    lines = stderr.decode().strip().splitlines()
    assert lines == [lines[-1]] and f"stopped by {name}" in lines[-1] and "--resume" in lines[-1]
    resumed = subprocess.run(
        [CONSOLE, "run", many_images, "--out", out, *FAST, "--resume"],
        capture_output=True,
        timeout=STARTUP_SECONDS * 2,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert pq.read_table(out).num_rows == IMAGES


def test_a_full_disk_mid_run_is_one_line_and_exit_1(many_images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"

    def small_files_only() -> None:  # writes past 4 kB fail as on a full disk (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 * 1024, 4 * 1024))

    # The first part (300 rows, at least 16 bytes each) cannot be written: mid-run.
    process = start(many_images, out, "--flush-every", "300", preexec_fn=small_files_only)
    _, stderr = process.communicate(timeout=STARTUP_SECONDS * 2)
    assert process.returncode == 1, stderr
    message = stderr.decode().strip()
    assert len(message.splitlines()) == 1 and "File too large" in message, message
    assert "cannot write results" in message and "--resume" in message
