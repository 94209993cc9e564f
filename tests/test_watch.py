"""``psicbatch run --watch``: complete files only, each exactly once, a clean quick stop."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner, Result

from psicbatch.assets import demo_model_path
from psicbatch.cli import main
from psicbatch.data.synth import generate
from psicbatch.errors import PsicbatchError
from psicbatch.run.folder_scan import FolderScan
from psicbatch.run.watch import CompletionTracker, WatchOptions, WatchStatus
from tests.run_processes import CONSOLE
from tests.stops import main_thread_only, send_stop


def stat(size: int, mtime: int) -> os.stat_result:
    return SimpleNamespace(st_size=size, st_mtime_ns=mtime)  # type: ignore[return-value]


def test_a_file_is_complete_once_unchanged_for_the_settle_time() -> None:
    tracker = CompletionTracker(settle_seconds=1.0)
    path = Path("part.png")
    assert tracker.complete({path: stat(0, 1)}, now=0.0) == []  # created, empty
    assert tracker.complete({path: stat(500, 2)}, now=0.9) == []  # a chunk written
    assert tracker.complete({path: stat(900, 3)}, now=1.8) == []  # another: the clock restarts
    assert tracker.complete({path: stat(900, 3)}, now=2.7) == []  # 0.9 s unchanged
    assert tracker.complete({path: stat(900, 3)}, now=2.85) == [path]
    assert tracker.complete({}, now=3.0) == [] and tracker.seen == {}


def test_with_a_marker_only_the_marker_says_complete(tmp_path: Path) -> None:
    tracker = CompletionTracker(settle_seconds=0.0, marker=".done")
    path = tmp_path / "part.png"
    path.write_bytes(b"x")
    assert tracker.complete({path: path.stat()}, now=100.0) == []
    (tmp_path / "part.png.done").touch()
    assert tracker.complete({path: path.stat()}, now=100.0) == [path]


def test_files_found_complete_together_are_each_handed_out_once(tmp_path: Path) -> None:
    """More complete files than one part holds: the rest wait in no later scan."""
    from psicbatch.run.folder_scan import version
    from psicbatch.run.watch import BATCH_LIMIT, _complete_batches

    count = BATCH_LIMIT + 3
    for index in range(count):
        (tmp_path / f"{index:02d}.png").write_bytes(b"x")
        (tmp_path / f"{index:02d}.png.done").touch()
    done: set = set()
    watching = WatchOptions(tmp_path, marker=".done")
    scanner = FolderScan(tmp_path, tmp_path / "out", done)
    batches = _complete_batches(scanner, CompletionTracker(0, ".done"), watching, time.monotonic)
    handed = []
    for _ in range(2):  # as the watch does: each batch written, then the next asked for
        batch, _ = next(batches)
        handed += [path.name for path, _ in batch]
        done.update(version(path, stat) for path, stat in batch)
    assert sorted(handed) == [f"{index:02d}.png" for index in range(count)]


def test_a_stop_that_something_swallowed_still_ends_the_watch(tmp_path: Path) -> None:
    """A signal whose handler runs inside a finalizer raises there, where Python only
    prints the exception; the handler then ignores further signals. The watch's next poll
    raises the stop again: it had run on, deaf to SIGTERM."""
    from psicbatch.run.shutdown import Stopped, signals_stop
    from psicbatch.run.watch import _complete_batches

    main_thread_only()
    watching = WatchOptions(tmp_path, marker=".done")
    tracker = CompletionTracker(0, ".done")
    with signals_stop():
        scanner = FolderScan(tmp_path, tmp_path / "out", set())
        batches = _complete_batches(scanner, tracker, watching, time.monotonic)
        assert next(batches)[0] == []  # a poll that found nothing
        with contextlib.suppress(Stopped):  # swallowed, as by a finalizer
            send_stop()
        with pytest.raises(Stopped):
            next(batches)


def start_watch(folder: Path, out: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [CONSOLE, "run", "--watch", folder, "--out", out, "--device", "cpu", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def rows(out: Path) -> list[dict]:
    if not any(out.glob("date=*/hour=*/part-*.parquet")):
        return []
    return ds.dataset(out, format="parquet", partitioning="hive").to_table().to_pylist()


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()[1]  # it stopped: why
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def write_in_chunks(source: Path, target: Path, pause: float) -> None:
    data = source.read_bytes()
    with target.open("wb") as file:
        for start in range(0, len(data), len(data) // 3 + 1):
            file.write(data[start : start + len(data) // 3 + 1])
            file.flush()
            time.sleep(pause)


def test_watch_survives_a_kill_with_every_file_once_and_stops_on_sigterm(tmp_path: Path) -> None:
    images = generate(tmp_path / "made", 9, (64, 64), seed=3)
    folder, out = tmp_path / "line", tmp_path / "results"
    folder.mkdir()
    options = ("--settle", "0.6", "--precision", "fp32")
    first = start_watch(folder, out, *options)
    write_in_chunks(images[0], folder / "a0.png", pause=0.3)  # each pause below --settle
    for index, image in enumerate(images[1:4], start=1):
        (folder / f"a{index}.png").write_bytes(image.read_bytes())
    wait_for(lambda: len(rows(out)) == 4, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    (folder / "broken.png").write_bytes(images[4].read_bytes()[:100])
    for index, image in enumerate(images[5:], start=5):
        (folder / f"b{index}.png").write_bytes(image.read_bytes())
    second = start_watch(folder, out, *options)
    wait_for(lambda: len(rows(out)) == 9, second)
    time.sleep(1.0)  # nothing more comes: no file twice
    began = time.monotonic()
    second.send_signal(signal.SIGTERM)
    _, stderr = second.communicate(timeout=30)
    assert time.monotonic() - began < 1.0 and second.returncode == 0, stderr
    assert "latency (complete to written) p50" in stderr
    table = rows(out)
    names = sorted(Path(row["path"]).name for row in table)
    assert names == sorted(["a0.png", "a1.png", "a2.png", "a3.png", "broken.png"] +
                           [f"b{i}.png" for i in range(5, 9)])  # fmt: skip
    by_name = {Path(row["path"]).name: row for row in table}
    assert by_name["a0.png"]["file_size"] == images[0].stat().st_size  # read once complete
    assert by_name["a0.png"]["error"] is None and by_name["broken.png"]["error"]
    assert {row["date"] for row in table} and all(row["completed_at"] for row in table)
    # The report reads the watch's folder, or one day of it, as it reads a results file.
    page, csv_table = tmp_path / "watch.html", tmp_path / "watch.csv"
    for results, overwrite in ((out, []), (next(out.glob("date=*")), ["--overwrite"])):
        expected = sum(f"date={row['date']}" in str(results) or results == out for row in table)
        report = ["report", str(results), "--html", str(page), "--csv", str(csv_table), *overwrite]
        result = CliRunner().invoke(main, report)
        assert result.exit_code == 0, result.output
        text = page.read_text()
        assert f"<td>{expected} images</td>" in text and "<td>1 error</td>" in text
        assert "<tr><th>parts</th>" in text and "<tr><th>completed</th>" in text
        assert f"watch.csv: {expected} rows" in result.output
        shown = CliRunner().invoke(main, ["info", str(results), "--json"])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.output)["images"] == expected
        assert json.loads(shown.output)["errors"] == 1
        assert "completed_at" in csv_table.read_text().splitlines()[0]


def watch_one_image(tmp_path: Path, *options: str, quiet: bool = True) -> tuple[Result, Path]:
    """A watch, in this process, of a folder holding one image; how it ended, and its
    results folder."""
    (image,) = generate(tmp_path / "made", 1, (64, 64), seed=3)
    folder, out = tmp_path / "line", tmp_path / "results"
    folder.mkdir()
    (folder / "a.png").write_bytes(image.read_bytes())
    args = ["run", "--watch", str(folder), "--out", str(out), "--device", "cpu"]
    return CliRunner().invoke(
        main,
        [*args, *(["-q"] if quiet else []), "--settle", "0.1", "--precision", "fp32", *options],
    ), out


def stall_first_stat(monkeypatch: pytest.MonkeyPatch, name: str, seconds: float) -> None:
    """The scan's first ``stat`` of a file named ``name`` waits ``seconds``, as on a
    network share that stopped answering."""
    from psicbatch.run import folder_scan

    real_stat, stalled = os.stat, []

    def stalling(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(path).endswith(name) and not stalled:
            stalled.append(path)
            time.sleep(seconds)
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(folder_scan.os, "stat", stalling)


def notes_until_the_first_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], Path]:
    """The notes of a watch of one image (``watch_one_image``) that the scan after its
    first rows ends with an error, and its results folder (holding that image's row)."""
    pending = FolderScan.pending

    def pending_until_done(scanner: FolderScan, now: float) -> dict:
        if rows(Path(scanner.skip)):  # the watch's results folder
            raise PsicbatchError("the test has seen enough")
        return pending(scanner, now)

    monkeypatch.setattr(FolderScan, "pending", pending_until_done)
    result, out = watch_one_image(tmp_path, quiet=False)
    assert result.output.splitlines()[-1] == "Error: the test has seen enough", result.output
    assert [Path(row["path"]).name for row in rows(out)] == ["a.png"]
    return [line for line in result.output.splitlines() if line.startswith("note: ")], out


def assert_silence_noted(notes: list[str], place: Path, waiting: str) -> None:
    """The two notes of a silence of ``place``: when it began (then what the watch does,
    ``waiting``) and when it ended."""
    assert len(notes) == 2, notes
    assert re.fullmatch(
        rf"note: {re.escape(str(place))} has not answered for \d+ s \(a network share that "
        rf"stopped answering\?\); {re.escape(waiting)}",
        notes[0],
    )
    assert notes[1] == f"note: {place} answers again"


def test_a_watch_says_when_its_folder_stops_answering_and_when_it_answers_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network share that stops answering holds a scan in a system call (a hard NFS
    mount, for ever): the watch showed "waiting for files" meanwhile, as if no part came.
    The scan runs in a thread of its own; the watch notes the silence (after 0.5 s here)
    and the answer, then inspects what the scan found. Ended by a later scan's error."""
    from psicbatch.run import folder_scan
    from psicbatch.run import watch as watch_module

    monkeypatch.setattr(folder_scan, "SILENT_SECONDS", 0.5)
    monkeypatch.setattr(watch_module, "SCAN_PATIENCE", 0.2)
    stall_first_stat(monkeypatch, "a.png", 1.2)
    notes, _ = notes_until_the_first_rows(tmp_path, monkeypatch)
    assert_silence_noted(notes, tmp_path / "line", "the watch waits for it")
    assert WatchStatus(silent=12.4).line() == (
        "0 images, waiting for files; the folder has not answered for 12 s"
    )


def test_time_passes_for_waiting_parts_while_the_folder_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part whose last image never came is decided incomplete at --part-timeout: the
    watch is handed an empty batch each second of a silent scan, as at each empty poll,
    and the files the scan found once it answers."""
    from psicbatch.run import folder_scan
    from psicbatch.run import watch as watch_module

    monkeypatch.setattr(folder_scan, "SILENT_SECONDS", 0.3)
    monkeypatch.setattr(watch_module, "SCAN_PATIENCE", 0.2)
    (tmp_path / "a.png").write_bytes(b"x")
    stall_first_stat(monkeypatch, "a.png", 1.2)
    scanner = FolderScan(tmp_path, tmp_path / "out", set())
    told: list[float | None] = []
    tracker = CompletionTracker(settle_seconds=0)
    batches = watch_module._complete_batches(
        scanner, tracker, WatchOptions(tmp_path), time.monotonic, lambda s, _: told.append(s)
    )
    handed = [next(batches)[0]]
    while not handed[-1]:
        handed.append(next(batches)[0])
    assert len(handed) >= 2 and [path.name for path, _ in handed[-1]] == ["a.png"]
    silent = [seconds for seconds in told if seconds is not None]
    assert silent and silent == sorted(silent) and told[-1] is None


def test_a_watch_says_when_its_folder_is_gone_and_when_it_is_back(tmp_path: Path) -> None:
    """A camera share unmounted, or its folder moved: the watch said nothing and showed
    "waiting for files" until the folder came back."""
    from psicbatch.run.watch import _complete_batches, _folder_told

    folder = tmp_path / "line"
    folder.mkdir()
    result, lines = WatchStatus(), []
    told = partial(_folder_told, result, lambda status: lines.append(status.line()), folder)
    scanner = FolderScan(folder, tmp_path / "out", set())
    watching = WatchOptions(folder, poll_seconds=0.01)
    batches = _complete_batches(scanner, CompletionTracker(0), watching, time.monotonic, told)
    assert next(batches)[0] == [] and lines == []
    folder.rmdir()
    assert next(batches)[0] == [] and result.missing
    assert lines == ["0 images, waiting for files; the folder is gone"]
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    assert [path.name for path, _ in next(batches)[0]] == ["a.png"] and not result.missing
    assert result.notes == [
        f"{folder} is gone (unmounted, moved or removed?); the watch waits for it to come back",
        f"{folder} is back",
    ]


@pytest.mark.timeout(60, method="thread")  # without the timeout, the watch hangs for ever
def test_a_watch_whose_batch_makes_no_progress_stops_with_one_line(
    tmp_path: Path, hung_engine: None
) -> None:
    """A hung engine froze a watch without a word, and with it the line's inspection:
    --batch-timeout did not apply to watches. It stops the watch now (exit code 1), for
    its service manager to restart it; the batch's files are inspected again then."""
    began = time.monotonic()
    result, out = watch_one_image(tmp_path, "--batch-timeout", "1")
    assert result.exit_code == 1, result.output
    said = "Error: no batch result and no progress within 1 s; the worker may be hung"
    assert result.output.startswith(said) and len(result.output.splitlines()) == 1
    assert time.monotonic() - began < 60
    assert rows(out) == []  # its files wait for the restart


def test_a_watch_whose_engine_fails_says_so_in_one_line(
    tmp_path: Path, engine_out_of_memory: str
) -> None:
    """It was a traceback."""
    result, _ = watch_one_image(tmp_path)
    assert result.exit_code == 1, result.output
    said = f"Error: worker on cpu failed: OutOfMemoryError: {engine_out_of_memory}; a smaller"
    assert result.output.startswith(said) and len(result.output.splitlines()) == 1


@pytest.mark.timeout(60)  # without the lock, the second watch would watch until stopped
def test_a_second_watch_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    """Both would inspect every image: each would be in the results twice."""
    (image,) = generate(tmp_path / "made", 1, (64, 64), seed=3)
    folder, out = tmp_path / "line", tmp_path / "results"
    folder.mkdir()
    (folder / "camera2").symlink_to(tmp_path / "made")  # watched as if it were there
    (folder / "camera3").symlink_to(folder)  # a loop: said, not followed
    first = start_watch(folder, out, "--settle", "0.2", "--precision", "fp32")
    try:
        (folder / "a.png").write_bytes(image.read_bytes())
        wait_for(lambda: len(rows(out)) == 2, first)
        second = ["run", "--watch", str(folder), "--out", str(out), "--device", "cpu"]
        result = CliRunner().invoke(main, [*second, "--precision", "fp32"])
        said = (
            f"Error: {out}: another psicbatch run --watch (process {first.pid}) is writing "
            f"this output (lock {out / '_watch.lock'}); wait for it or choose another --out"
        )
        assert (result.exit_code, result.output.splitlines()) == (1, [said])
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert not (out / "_watch.lock").exists()
    linked = folder.resolve() / "camera2" / image.relative_to(tmp_path / "made")
    assert sorted(row["path"] for row in rows(out)) == [str(folder / "a.png"), str(linked)]
    said = f"note: {folder.resolve() / 'camera3'} is the folder watched as {folder.resolve()}"
    assert said in first.stderr.read(), "the loop was passed over without a word"


def test_a_restart_with_another_engine_is_refused(tmp_path: Path) -> None:
    (tmp_path / "line").mkdir()
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["run", "--watch", str(tmp_path / "line"), "--out", str(out), "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "not a psicbatch --watch output" in result.output
    (out / "notes.txt").unlink()
    (out / "_watch.json").write_text(
        '{"sources": [], "engine": {}, "thresholds": {}, "masks": "gated", '
        '"decoder": "pil", "preprocessing": {}}'
    )
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "the model or engine" in result.output
    assert "give another --out" in result.output and "--resume" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.timeout(60)  # without the check, the watch would start and wait for files
def test_decisions_chosen_on_another_engine_are_refused_before_watching(tmp_path: Path) -> None:
    """As for a run: their escape rate holds for the engine they were chosen on only."""
    from psicbatch.decisions import Decisions, Rule

    (tmp_path / "line").mkdir()
    other = {"backend": "onnxruntime", "precision": "int8", "engine_sha256": "0" * 64}
    decisions = tmp_path / "decisions.json"
    Decisions(0.5, Rule("classifier", 0), {}, scored_by=other).write(decisions)
    out = tmp_path / "results"
    args = ["run", "--watch", str(tmp_path / "line"), "--out", str(out), "--device", "cpu"]
    result = CliRunner().invoke(main, [*args, "--decisions", str(decisions)])
    assert result.exit_code == 1, result.output
    assert "chosen on another engine's probabilities (onnxruntime int8" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def stall_first_write(monkeypatch: pytest.MonkeyPatch, until: Callable[[], object]) -> None:
    """The watch's first write of a part waits for ``until()`` to return, as a write
    into a network share that stopped answering does."""
    from psicbatch.run import watch as watch_module

    real_write, stalled = watch_module.write_part, []

    def stalling(table: object, part: Path) -> None:
        if not stalled:
            stalled.append(part)
            until()
        real_write(table, part)  # type: ignore[arg-type]

    monkeypatch.setattr(watch_module, "write_part", stalling)


def test_a_watch_says_when_its_results_folder_stops_answering_and_when_it_answers_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write into a results folder on a share that stops answering held the watch
    in a system call without a word. It now runs in a thread of its own; the watch notes
    the wait (after 0.5 s here) and the answer. Ended by a later scan's error."""
    from psicbatch.run import watch as watch_module

    monkeypatch.setattr(watch_module, "SILENT_SECONDS", 0.5)
    monkeypatch.setattr(watch_module, "SCAN_PATIENCE", 0.2)
    stall_first_write(monkeypatch, partial(time.sleep, 1.2))
    notes, out = notes_until_the_first_rows(tmp_path, monkeypatch)
    assert_silence_noted(notes, out, "the watch waits to write its results there")
    assert WatchStatus(out_silent=12.4).line() == (
        "0 images, waiting for files; the results folder has not answered for 12 s"
    )


def test_a_watch_says_when_its_model_does_not_answer_as_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading and hashing the model held the watch in a system call without a word on a
    share that stopped answering. It now runs in a thread of its own; the watch notes the
    wait (after 0.3 s here) and the answer, then watches."""
    from psicbatch.run import runner

    monkeypatch.setattr(runner, "SILENT_SECONDS", 0.3)
    monkeypatch.setattr(runner, "PATIENCE", 0.05)
    real = runner.describe_run

    def slow(*args: object) -> object:
        time.sleep(1.2)  # the share answers again
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "describe_run", slow)
    notes, _ = notes_until_the_first_rows(tmp_path, monkeypatch)
    assert_silence_noted(notes, demo_model_path(), "the watch waits for it to start")
    assert WatchStatus(model_silent=12.4).line() == (
        "0 images, waiting for files; the model's folder has not answered for 12 s"
    )


def test_a_watch_whose_results_folder_stalls_as_it_starts_says_so_and_stops_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its start (claiming the folder, its lock and records, reading the versions done)
    held the watch in a system call without a word on a share that stopped answering
    after the first look at --out, deaf to SIGTERM there (a wait that a signal can
    interrupt stands in for that call here). Now the start runs in a thread of its own:
    a start that stalls is noted, and a stop ends the watch within seconds."""
    import threading

    from psicbatch.commands import run as run_command
    from psicbatch.run import watch as watch_module

    main_thread_only()
    monkeypatch.setattr(watch_module, "SILENT_SECONDS", 0.3)
    monkeypatch.setattr(watch_module, "SCAN_PATIENCE", 0.2)
    monkeypatch.setattr(run_command, "exit_at_once", lambda code: sys.exit(code))
    answered = threading.Event()
    real_done = watch_module.done_versions

    def stalled_done(out: Path) -> object:
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        answered.wait(60)
        return real_done(out)

    monkeypatch.setattr(watch_module, "done_versions", stalled_done)
    began = time.monotonic()
    try:
        result, out = watch_one_image(tmp_path, quiet=False)
        written = rows(out)
    finally:
        answered.set()
    assert time.monotonic() - began < 30
    assert result.exit_code == 0, result.output
    said = result.output.replace("\n", "")
    assert re.search(
        rf"note: {re.escape(str(out))} has not answered for \d+ s \(a network share that "
        r"stopped answering\?\); the watch waits for it to start",
        said,
    ), result.output
    assert f"stopped by SIGTERM; results in {out}" in said, result.output
    assert written == []


def test_a_stop_ends_a_watch_whose_results_folder_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (a service manager's stop) waited with the write, for ever on a hard NFS
    mount, and so did removing the lock file on the way out; the service manager then
    killed the watch. Now the watch stops at once: the batch whose write waits is
    inspected again at the next start, and the lock file left behind locks nothing."""
    import threading

    from psicbatch import output_lock
    from psicbatch.commands import run as run_command
    from psicbatch.run import watch as watch_module
    from psicbatch.run.job import WATCH_LOCK_FILE

    main_thread_only()
    monkeypatch.setattr(watch_module, "SILENT_SECONDS", 0.3)
    monkeypatch.setattr(watch_module, "SCAN_PATIENCE", 0.2)
    monkeypatch.setattr(output_lock, "RELEASE_SECONDS", 0.5)
    monkeypatch.setattr(run_command, "exit_at_once", lambda code: sys.exit(code))
    answered = threading.Event()

    def never_answered() -> None:
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        answered.wait(60)

    stall_first_write(monkeypatch, never_answered)
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path.name == WATCH_LOCK_FILE:
            answered.wait(60)
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    began = time.monotonic()
    try:
        result, out = watch_one_image(tmp_path, quiet=False)
        written = rows(out)  # before the write is let go
    finally:
        answered.set()
    assert time.monotonic() - began < 30
    assert result.exit_code == 0, result.output
    assert f"note: {out} has not answered for 0 s" in result.output
    assert f"stopped by SIGTERM; results in {out}" in result.output.replace("\n", ""), result.output
    assert written == []
