"""A run stopped by Ctrl-C, SIGTERM or a full disk saves what is done, says so in one line
and exits with its code; the saved rows resume to the full table."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.run_processes import (
    CONSOLE,
    FAST,
    IMAGES,
    STARTUP_SECONDS,
    many_images,
    saved_parts,
    start,
    wait_for,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return many_images(tmp_path_factory.mktemp("many"))


@pytest.mark.parametrize(
    ("stop", "workers", "code"),
    [(signal.SIGTERM, "1", 143), (signal.SIGINT, "2", 130)],
)
def test_a_signal_saves_what_is_done_and_exits_with_its_code(
    images: Path, tmp_path: Path, stop: int, workers: str, code: int
) -> None:
    out = tmp_path / "r.parquet"
    process = start(images, out, "--workers", workers, start_new_session=True)
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
        [CONSOLE, "run", images, "--out", out, *FAST, "--resume"],
        capture_output=True,
        timeout=STARTUP_SECONDS * 2,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert pq.read_table(out).num_rows == IMAGES


def test_a_full_disk_mid_run_is_one_line_and_exit_1(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"

    def small_files_only() -> None:  # writes past 4 kB fail as on a full disk (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 * 1024, 4 * 1024))

    # The first part (300 rows, at least 16 bytes each) cannot be written: mid-run.
    process = start(images, out, "--flush-every", "300", preexec_fn=small_files_only)
    _, stderr = process.communicate(timeout=STARTUP_SECONDS * 2)
    assert process.returncode == 1, stderr
    message = stderr.decode().strip()
    assert len(message.splitlines()) == 1 and "File too large" in message, message
    assert "cannot write results" in message and "--resume" in message
