"""A run with stuck or orphaned workers ends: a hung worker, or the main process killed.
Each case runs the console command in a subprocess with a timeout, so a regression fails
instead of hanging the suite."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.run_processes import (
    alive,
    command_line,
    descendants,
    many_images,
    saved_parts,
    start,
    wait_for,
    workers_of,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return many_images(tmp_path_factory.mktemp("many"))


def test_hung_workers_end_the_process_within_seconds(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    process = start(images, out, "--workers", "2", "--batch-size", "1", "--batch-timeout", "5")
    try:
        wait_for(lambda: saved_parts(out) >= 1, process=process)
        workers = workers_of(process.pid)
        assert len(workers) == 2
        # Hung: alive, but never answering again. Both, since a worker stopped before it
        # took any batch leaves the other to finish the run normally.
        for worker in workers:
            os.kill(worker, signal.SIGSTOP)
        stopped_at = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 1
        assert time.monotonic() - stopped_at < 30
        assert b"no result or progress from any worker for 5 s" in stderr, stderr
        assert b"terminate called" not in stderr
        wait_for(lambda: not any(map(alive, workers)), 10)
    finally:
        process.kill()


def test_workers_end_when_the_main_process_is_killed(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    process = start(images, out, "--workers", "2", "--batch-size", "1")
    try:
        wait_for(lambda: len(workers_of(process.pid)) == 2, process=process)
        workers = workers_of(process.pid)
        process.kill()  # SIGKILL: the main process runs no code of its own to stop them
        process.wait()
        wait_for(lambda: not any(map(alive, workers)), 15)
    finally:
        process.kill()


def test_stopping_workers_ends_a_stopped_one_at_once() -> None:
    """A stopped process holds SIGTERM until it runs again: the workers are resumed as
    they are terminated, not killed only after the grace period."""
    import multiprocessing

    from psicbatch.run.executors import _stop_now

    context = multiprocessing.get_context("fork")  # a bare child: no interpreter to start
    worker = context.Process(target=time.sleep, args=(60,), daemon=True)
    worker.start()
    os.kill(worker.pid, signal.SIGSTOP)
    wait_for(lambda: Path(f"/proc/{worker.pid}/stat").read_text().split()[2] == "T", 10)
    started = time.monotonic()
    _stop_now([worker], context.Queue(), context.Queue())
    assert not worker.is_alive() and worker.exitcode == -signal.SIGTERM
    assert time.monotonic() - started < 4  # the grace period is 5 s


def test_waiting_for_workers_at_the_end_is_bounded_for_all_together() -> None:
    """A run that ends normally waits a while for its workers to leave; with several
    that do not, the wait is shared rather than spent again on each."""
    import multiprocessing

    from psicbatch.run.executors import _join_all

    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=time.sleep, args=(60,), daemon=True) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        started = time.monotonic()
        _join_all(workers, seconds=1)
        assert time.monotonic() - started < 2  # one after another would take 3 s
        assert all(worker.is_alive() for worker in workers)
    finally:
        for worker in workers:
            worker.kill()
            worker.join()


def test_stop_handlers_a_library_replaces_are_put_back() -> None:
    """As Ray's start replaces them with its own, which abort the process."""
    from psicbatch.run.shutdown import signals_stop, stop_handlers_kept

    with signals_stop():
        ours = [signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)]
        with stop_handlers_kept():
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert [signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)] == ours


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["hung actor", "SIGTERM"])
def test_a_ray_run_that_hangs_or_is_stopped_ends_with_its_ray(
    images: Path, tmp_path: Path, stop: str
) -> None:
    """Ray waited for a hung actor for ever (--batch-timeout did not apply), and its own
    SIGTERM handler aborted the run (exit code 134) instead of saving its rows. Either
    way the run ends as local runs do, and the local Ray it started ends with it."""
    pytest.importorskip("ray", reason="Ray is an optional extra")
    out = tmp_path / "r.parquet"
    options = ["--executor", "ray", "--batch-size", "1", "--batch-timeout", "5"]
    process = start(images, out, *options)
    try:
        wait_for(lambda: saved_parts(out) >= 1, process=process)
        family = descendants(process.pid)
        if stop == "SIGTERM":
            process.send_signal(signal.SIGTERM)
        else:
            actors = [pid for pid in family if b"MapBatches(Inspector)" in command_line(pid)]
            assert actors, "no Ray actor found"
            for actor in actors:
                os.kill(actor, signal.SIGSTOP)
        _, stderr = process.communicate(timeout=90)
        if stop == "SIGTERM":
            assert process.returncode == 143, stderr
            assert b"stopped by SIGTERM: the results computed so far are in" in stderr
        else:
            assert process.returncode == 1, stderr
            said = b"Error: no batch result and no progress within 5 s; the worker may be hung"
            assert said in stderr
        assert b"Traceback" not in stderr
        assert saved_parts(out) >= 1
        wait_for(lambda: not any(map(alive, family)), 15)
    finally:
        process.kill()
