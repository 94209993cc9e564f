"""A command stopped by Ctrl-C, SIGTERM or a full disk saves what is done, says so in one
line and exits with its code; a run's saved rows resume to the full table, a training's
epochs to its model."""

from __future__ import annotations

import itertools
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from psicbatch.assets import demo_model_path
from psicbatch.commands.run import run_status
from psicbatch.data.synth import generate
from tests.run_processes import (
    CONSOLE,
    IMAGES,
    STARTUP_SECONDS,
    many_images,
    run_options,
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
        [CONSOLE, "run", images, "--out", out, *run_options(images), "--resume"],
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


def _stopped(command: list[object], started: Callable[[], bool], stop: int) -> tuple[int, str]:
    """``psicbatch COMMAND`` stopped by ``stop`` (to its process group, as a terminal's
    Ctrl-C) once ``started``: its exit code and what it printed on standard error."""
    process = subprocess.Popen(
        [CONSOLE, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_for(started, process=process)
        os.killpg(process.pid, stop)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    return process.returncode, stderr.decode()


def test_a_stopped_training_keeps_its_epochs_says_so_and_resumes(tmp_path: Path) -> None:
    """Every command, not only run: a signal unwinds it (its lock goes) and one line says
    what is kept; a training's epochs so far are, and --resume goes on from them."""
    generate(tmp_path / "data", 6, (64, 64), defect_rate=0.5, seed=1)
    out = tmp_path / "m.pt"
    train = ["train", tmp_path / "data", "--out", out, "--width", "0.125", "-q"]
    epochs = ["--seg-epochs", "400", "--cls-epochs", "1"]
    partial = tmp_path / "m.pt.partial"
    code, stderr = _stopped([*train, *epochs], partial.exists, signal.SIGTERM)
    assert code == 143, stderr
    assert stderr.splitlines() == [
        f"stopped by SIGTERM: the epochs done are in {partial}; the same command with "
        "--resume continues"
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "m.pt.partial"]
    resumed = subprocess.run(
        [CONSOLE, *train, "--seg-epochs", "2", "--cls-epochs", "1", "--resume"],
        capture_output=True,
        timeout=STARTUP_SECONDS * 2,
    )
    # Its epochs were kept with its options: a resume with others says so, not mixing them.
    said = b"--seg-epochs 400 there, 2 now"
    assert resumed.returncode == 1 and said in resumed.stderr, resumed.stderr


def test_a_stopped_build_leaves_no_staging_tuning_or_lock_behind(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    init = [CONSOLE, "init", model, "--width", "0.125", "--input-size", "64x64"]
    subprocess.run(init, check=True, capture_output=True)
    engines = tmp_path / "engines"
    tuning = lambda: any(engines.glob(".psicbatch-tuning-*/*"))  # noqa: E731
    build = ["build-engine", model, "--out", engines / "line", "--tune-seconds", "60"]
    code, stderr = _stopped(build, tuning, signal.SIGINT)
    assert (code, stderr.splitlines()[-1]) == (130, "stopped by SIGINT"), stderr
    assert list(engines.iterdir()) == []


def test_a_stop_ends_a_run_whose_results_folder_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM waited with the writer, for ever on a hard NFS mount, and so did the looks
    at the parts folder on the way out. Now a stop waits for a write until it has not
    answered for SILENT_SECONDS, then ends in one line saying so; the parts written
    before stay for --resume. The progress line said nothing while the writes waited."""
    from click.testing import CliRunner

    from psicbatch import output_lock
    from psicbatch.cli import main
    from psicbatch.commands import run as run_command
    from psicbatch.run import output
    from psicbatch.run.runner import RunSummary
    from tests.stops import main_thread_only

    main_thread_only()
    monkeypatch.setattr(output, "SILENT_SECONDS", 0.3)
    monkeypatch.setattr(output, "PATIENCE", 0.05)
    for module in (output, output_lock, run_command):
        monkeypatch.setattr(module, "RELEASE_SECONDS", 0.5)
    gone, answered = threading.Event(), threading.Event()
    real_write, real_is_dir = output.write_part, Path.is_dir

    def write_part(table: object, path: Path) -> None:
        if path.name != "part-00000000.parquet":  # the share stops answering
            if not gone.is_set():
                gone.set()
                threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
            answered.wait(60)
        real_write(table, path)  # type: ignore[arg-type]

    def is_dir(path: Path) -> bool:
        if gone.is_set() and path.name.endswith(".parts"):
            answered.wait(60)
        return real_is_dir(path)

    monkeypatch.setattr(output, "write_part", write_part)
    monkeypatch.setattr(Path, "is_dir", is_dir)
    generate(tmp_path / "data", 40, (48, 48), defect_rate=0.5, seed=1)
    out = tmp_path / "r.parquet"
    options = ["--device", "cpu", "--decoder", "pil", "--precision", "fp32"]
    small = ["--batch-size", "2", "--flush-every", "2"]
    began = time.monotonic()
    try:
        result = CliRunner().invoke(
            main, ["run", str(tmp_path / "data" / "images"), "-o", str(out), *small, *options]
        )
        saved = sorted(path.name for path in output.parts_directory(out).iterdir())
    finally:
        answered.set()
    assert time.monotonic() - began < 30
    assert result.exit_code == 143, result.output
    parts = output.parts_directory(out)
    assert result.output.strip().splitlines()[-1] == (
        f"stopped by SIGTERM: {parts} does not answer (a network share that stopped "
        "answering?); the results saved there before stay for --resume, which computes "
        "the others again"
    )
    assert "part-00000000.parquet" in saved and not out.exists()
    waiting = run_command.run_status(RunSummary(images=4, out_silent=12.4), 2.0)
    assert waiting.endswith("  the results folder has not answered for 12 s"), waiting


@pytest.mark.parametrize("stalled", ["checking", "opening", "reading the model"])
def test_a_run_says_what_does_not_answer_as_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stalled: str
) -> None:
    """The run's checks of its results and their opening (lock, parts folder, a resume's
    parts read), and reading and hashing the model, waited in the main thread without a
    word on a share that stopped answering, deaf to a stop there. They now run in
    threads of their own while the run tells how long they have waited."""
    from psicbatch.engines.spec import EngineSpec
    from psicbatch.run import output, runner
    from psicbatch.run.options import RunOptions
    from psicbatch.run.runner import RunSummary

    for module in (output, runner):
        monkeypatch.setattr(module, "SILENT_SECONDS", 0.3)
        monkeypatch.setattr(module, "PATIENCE", 0.05)
    owner, name, waited, said = {
        "checking": (runner, "_check_out", "out_silent", "opening the results  the results"),
        "opening": (
            output.ResultsOutput,
            "_open",
            "out_silent",
            "opening the results  the results",
        ),
        "reading the model": (runner, "describe_run", "model_silent", "reading the model  its"),
    }[stalled]
    real = getattr(owner, name)

    def slow(*args: object, **kwargs: object) -> object:
        time.sleep(1.0)  # the share answers again after a second
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, slow)
    generate(tmp_path / "data", 2, (32, 32), seed=1)
    paths = sorted((tmp_path / "data" / "images").iterdir())
    seen: list[tuple[float | None, bool]] = []
    options = RunOptions(tmp_path / "r.parquet", devices=("cpu",), decoder="pil")
    runner.run(
        paths,
        EngineSpec(checkpoint=demo_model_path()),
        options,
        lambda summary: seen.append((getattr(summary, waited), summary.output_open)),
    )
    waits = [(silent, opened) for silent, opened in seen if silent is not None]
    assert waits and not any(opened for _, opened in waits), seen
    assert max(silent for silent, _ in waits) >= 0.8 and seen[-1][0] is None, seen
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 2
    line = run_status(RunSummary(**{waited: 12.4}), 0.0)
    assert line.endswith(f"{said} folder has not answered for 12 s"), line


def test_a_stop_ends_a_run_whose_model_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the model's share does not answer ends the run at once, in one line.
    A wait in a thread that blocks the signal stands in for that call, which no signal
    interrupts: made in the main thread, it held the stop until the share answered."""
    from click.testing import CliRunner

    from psicbatch.cli import main
    from psicbatch.run import runner
    from tests.stops import main_thread_only

    main_thread_only()
    answered = threading.Event()
    real = runner.describe_run

    def stalled(*args: object) -> object:
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            answered.wait(60)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "describe_run", stalled)
    generate(tmp_path / "data", 2, (32, 32), seed=1)
    out = tmp_path / "r.parquet"
    began = time.monotonic()
    try:
        result = CliRunner().invoke(
            main, ["run", str(tmp_path / "data" / "images"), "-o", str(out), "--device", "cpu"]
        )
    finally:
        answered.set()
    assert time.monotonic() - began < 30
    assert result.exit_code == 143, result.output
    last = result.output.strip().splitlines()[-1]
    assert last == "stopped by SIGTERM: no results had been computed yet", result.output
    assert not out.exists()


@pytest.mark.parametrize("batch", [[], ["--batch-size", "2"]], ids=["auto", "given"])
def test_a_run_whose_model_does_not_come_ends_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: list[str]
) -> None:
    """The model is read before the run starts (its input size, for the batch chosen on a
    CPU; then its description): on a share that stopped answering that waited for ever.
    Each reading is within the read limit."""
    from click.testing import CliRunner

    from psicbatch import checkpoint
    from psicbatch.cli import main

    monkeypatch.setenv("PSICBATCH_READ_TIMEOUT", "0.5")
    real = checkpoint.check_checkpoint_file

    def stalled(path: Path) -> None:
        time.sleep(3)
        real(path)

    monkeypatch.setattr(checkpoint, "check_checkpoint_file", stalled)
    generate(tmp_path / "data", 2, (32, 32), seed=1)
    model, out = demo_model_path(), tmp_path / "r.parquet"
    args = ["run", str(tmp_path / "data" / "images"), "-o", str(out), "--device", "cpu"]
    result = CliRunner().invoke(main, [*args, "--model", str(model), *batch])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"Error: {model}: took longer than 0.5 s to read (a network share that stopped "
        "answering? set PSICBATCH_READ_TIMEOUT to wait longer)"
    )
    assert not out.exists()


def test_a_run_tells_how_far_its_results_file_is_and_a_folder_that_stops_answering_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Assembling the results file from its parts stays in the run's own thread (a stop
    must not leave it running) and was silent: a large run's progress stood at its end,
    and on a share that stopped answering it waited there without a word. The run now
    tells how many parts are in, and how long a part has not come."""
    import pyarrow as pa

    from psicbatch.engines.spec import EngineSpec
    from psicbatch.run import output
    from psicbatch.run.options import RunOptions
    from psicbatch.run.runner import RunSummary, run

    monkeypatch.setattr(output, "SILENT_SECONDS", 0.3)
    monkeypatch.setattr(output, "PATIENCE", 0.05)
    as_schema, parts = output._as_schema, itertools.count()

    def slow_second_part(table: pa.Table, schema: pa.Schema) -> pa.Table:
        if next(parts) == 1:
            time.sleep(1.0)  # the share answers again after a second
        return as_schema(table, schema)

    monkeypatch.setattr(output, "_as_schema", slow_second_part)
    generate(tmp_path / "data", 6, (32, 32), seed=1)
    paths = sorted((tmp_path / "data" / "images").iterdir())
    seen: list[tuple[tuple[int, int] | None, float | None]] = []
    options = RunOptions(
        tmp_path / "r.parquet", devices=("cpu",), decoder="pil", batch_size=2, part_rows=2
    )
    run(
        paths,
        EngineSpec(checkpoint=demo_model_path()),
        options,
        lambda summary: seen.append((summary.assembled, summary.out_silent)),
    )
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 6
    assembly = [(assembled, silent) for assembled, silent in seen if assembled is not None]
    assert [assembled for assembled, _ in assembly if _ is None][:2] == [(0, 3), (1, 3)]
    waited = [silent for assembled, silent in assembly if assembled == (1, 3) and silent]
    assert max(waited, default=0.0) >= 0.8, seen  # the second part had not come
    assert assembly[-1] == ((3, 3), None)
    line = run_status(RunSummary(images=6, assembled=(1, 3), out_silent=12.4), 2.0)
    assert line.endswith(
        "  writing the results file: parts in 1/3  the results folder has not answered for 12 s"
    ), line
