from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from psicbatch import __version__
from psicbatch.assets import demo_model_path
from psicbatch.cli import COMMANDS, main
from psicbatch.commands import SUMMARIES
from tests.fresh_process import exits_in_a_fresh_process
from tests.stops import main_thread_only, send_stop

CONSOLE_SCRIPT = Path(sys.executable).parent / "psicbatch"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, runner: CliRunner) -> Path:
    path = tmp_path / "tiny.pt"
    result = runner.invoke(main, ["init", str(path), "--width", "0.125", "--input-size", "64x48"])
    assert result.exit_code == 0, result.output
    return path


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("command", [[], *[[name] for name in COMMANDS]])
def test_every_command_has_help(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    if command:  # the command table's name and summary are the command's own
        loaded = main.get_command(click.Context(main), command[0])
        assert loaded.name == command[0]
        assert loaded.get_short_help_str(limit=200) == SUMMARIES[command[0]]
    else:
        assert all(f"  {name} " in result.output for name in COMMANDS)


def test_the_command_line_loads_a_command_only_when_it_runs() -> None:
    """Each spawned worker of a run imports the command line again: it must stay light."""
    probe = "import sys, psicbatch.cli; print(sorted({'torch', 'pyarrow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_list_of_commands_loads_none_of_them() -> None:
    """``psicbatch --help`` answers at once instead of importing torch for every summary."""
    probe = (
        "import sys\nfrom psicbatch.cli import main\ntry:\n    main(['--help'])\n"
        "except SystemExit:\n    pass\nprint(sorted({'torch', 'pyarrow'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]" and "eval " in result.stdout


def test_no_command_imports_torch_before_it_runs() -> None:
    """A command's ``--help`` and its option errors answer at once: declaring a command's
    options imports no torch (a second or more); its work imports it when it runs."""
    probe = (
        "import importlib, sys\nfrom psicbatch.cli import COMMANDS\n"
        "for module, _ in COMMANDS.values():\n    importlib.import_module(module)\n"
        "    if 'torch' in sys.modules:\n        print(module)\n        break\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", f"{result.stdout.strip()} imports torch"


def test_an_option_error_needs_no_torch(runner: CliRunner) -> None:
    exits, printed = exits_in_a_fresh_process(["run", "x", "--batch-size", "0"])
    assert exits == ["2 False"], printed
    assert "Invalid value for '--batch-size'" in printed


def test_every_command_says_a_checkpoint_is_wrong_before_torch_loads(tmp_path: Path) -> None:
    """Absent, or not a checkpoint at all: checked while the arguments are parsed, the
    same line as loading would say, without waiting for torch (about 2 s)."""
    notes = tmp_path / "notes.pt"
    notes.write_text("not a model")
    absent = tmp_path / "absent.pt"
    folder = tmp_path / "images"
    folder.mkdir()
    commands = [
        ["info", str(absent)],
        ["build-engine", str(notes), "--device", "cpu"],
        ["bench", "--model", str(absent), "--device", "cpu"],
        ["run", str(folder), "--model", str(notes), "--device", "cpu"],
        ["train", str(folder), "--init", str(absent), "--out", str(tmp_path / "m.pt")],
        ["calibrate", str(folder), "--model", str(notes), "--device", "cpu"],
    ]
    exits, printed = exits_in_a_fresh_process(*commands)
    assert exits == ["1 False"] * len(commands), printed
    errors = printed.splitlines()
    assert errors.count(f"Error: {absent}: no such file") == 3, printed
    wrong = f"Error: {notes}: not a PyTorch checkpoint (expected a torch.save zip archive"
    assert sum(line.startswith(wrong) for line in errors) == 3, printed


def test_info_reports_config_parameters_and_flops(runner: CliRunner, tiny_checkpoint: Path) -> None:
    result = runner.invoke(main, ["info", str(tiny_checkpoint), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["width"] == 0.125
    assert summary["input_size"] == "64x48"
    assert summary["parameters"] == 537_644
    assert summary["gflop_per_image"] > 0
    assert len(summary["sha256"]) == 64


def test_info_table(runner: CliRunner, tiny_checkpoint: Path) -> None:
    result = runner.invoke(main, ["info", str(tiny_checkpoint)], terminal_width=160)
    assert result.exit_code == 0, result.output
    assert "537644" in result.output and "64x48" in result.output


def test_info_shows_names_with_brackets_as_they_are(runner: CliRunner, tmp_path: Path) -> None:
    """Rich would read ``[red]`` in a file name as markup and drop it."""
    named = tmp_path / "line[red]3.pt"
    named.write_bytes(demo_model_path().read_bytes())
    result = runner.invoke(main, ["info", str(named)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert result.output.count("line[red]3.pt") == 2  # the title and the file row


def test_info_on_a_folder_that_is_no_engine_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["info", str(tmp_path)])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: {tmp_path}: not an engine folder (manifest.json), an eval or cv folder "
        "(metrics.json or cv.json), a --watch results folder or a labelled dataset in one "
        "layout (choose one with --layout)"
    ]


def test_info_on_a_damaged_results_file_says_so(runner: CliRunner, tmp_path: Path) -> None:
    """A file named as results is read as results, whatever it holds: not as a model."""
    damaged = tmp_path / "results.parquet"
    damaged.write_bytes(b"PAR1" + b"\0" * 100)  # a copy cut short
    result = runner.invoke(main, ["info", str(damaged)])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: {damaged}: not a psicbatch results file (not a Parquet file)"
    ]


@pytest.mark.parametrize("command", ["info", "run"])
def test_a_bad_model_file_is_one_line(runner: CliRunner, tmp_path: Path, command: str) -> None:
    """run too: nothing (no progress line) is printed before the model is read."""
    bad = tmp_path / "notes.pt"
    bad.write_text("not a model")
    image = tmp_path / "images" / "part.png"
    image.parent.mkdir()
    image.write_bytes(_png_bytes())
    arguments = {
        "info": [str(bad)],
        "run": [str(image.parent), "--model", str(bad), "--out", str(tmp_path / "r.parquet")],
    }[command]
    result = runner.invoke(main, [command, *arguments])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {bad}: not a PyTorch checkpoint (expected a torch.save zip archive, e.g. model.pt)"
    ]


def test_an_error_before_a_progress_bar_shows_a_task_is_one_line(
    runner: CliRunner, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Also on a console that is not a terminal (a log), where rich ends a line whenever
    a bar stops: no empty line comes before the error."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a dataset")
    result = runner.invoke(main, ["eval", str(tiny_checkpoint), str(notes)])
    assert (result.exit_code, result.output.splitlines()) == (1, [f"Error: {notes}: not a folder"])


def test_an_error_a_stop_caused_is_reported_as_the_stop(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C inside a library can come out as the library's own error (an interrupted
    import reads as a missing package): the command says it was stopped, with its code."""
    import psicbatch.checkpoint
    from psicbatch.errors import PsicbatchError
    from psicbatch.run.shutdown import Stopped

    main_thread_only()

    def interrupted(*_: object) -> None:
        try:
            send_stop(signal.SIGINT)
        except Stopped:
            raise PsicbatchError("onnx is missing") from None

    monkeypatch.setattr(psicbatch.checkpoint, "save_checkpoint", interrupted)
    result = runner.invoke(main, ["init", str(tmp_path / "m.pt"), "--width", "0.125"])
    assert (result.exit_code, result.output.splitlines()) == (130, ["stopped by SIGINT"])


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        (["run", "."], "a checkpoint runs with --model {path}"),
        (["bench"], "a checkpoint runs with --model {path}"),
        (["calibrate", "."], "a checkpoint runs with --model {path}"),
        (["eval", "."], "a checkpoint is scored as psicbatch eval {path} DATA"),
    ],
)
def test_a_checkpoint_given_as_an_engine_says_how_to_give_it(
    runner: CliRunner, tiny_checkpoint: Path, command: list[str], usage: str
) -> None:
    result = runner.invoke(main, [*command, "--engine", str(tiny_checkpoint)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Invalid value for '--engine': {tiny_checkpoint} is a file, not an engine "
        f"folder from build-engine; {usage.format(path=tiny_checkpoint)}"
    )


def test_engines_with_none_built_says_how_to_build_one(runner: CliRunner, tmp_path: Path) -> None:
    for root in (tmp_path, tmp_path / "missing"):
        result = runner.invoke(main, ["engines", str(root)])
        assert result.exit_code == 0
        assert result.output == (
            f"no engine folders under {root}; build one: psicbatch build-engine CHECKPOINT\n"
        )


def test_init_rejects_bad_options(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["init", str(tmp_path / "m.pt"), "--input-size", "12by5"])
    assert result.exit_code == 2 and "1408x512" in result.output
    result = runner.invoke(main, ["init", str(tmp_path / "m.pt"), "--width", "0"])
    assert result.exit_code == 2 and "width" in result.output


def test_console_script_runs(tiny_checkpoint: Path) -> None:
    help_run = subprocess.run([CONSOLE_SCRIPT, "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and "info" in help_run.stdout
    info_run = subprocess.run(
        [CONSOLE_SCRIPT, "info", tiny_checkpoint, "--json"], capture_output=True, text=True
    )
    assert info_run.returncode == 0, info_run.stderr
    assert json.loads(info_run.stdout)["parameters"] == 537_644


def _png_bytes() -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("L", (32, 32)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_loss_history_at_a_glance() -> None:
    from psicbatch.summaries import sparkline

    falling = [10.0 ** -(i / 10) for i in range(90)]  # nine orders of magnitude, evenly
    line = sparkline(falling)
    first, bars, last = line.split(" ")
    assert (first, last) == ("1", "1.259e-09") and len(bars) == 30
    assert bars[0] == "█" and bars[-1] == "▁"
    # On the log scale an even fall gives evenly spaced bars, not one drop and a floor.
    assert len(set(bars)) == 8
    assert sparkline([0.0, 1.0, 0.5]).split(" ")[1] == "▁█▅"  # a zero: a linear scale
    assert sparkline([0.5, 0.1, math.nan, math.inf]).split(" ")[1] == "█▁××"  # diverged


def test_info_shows_how_the_loss_fell(runner: CliRunner) -> None:
    result = runner.invoke(main, ["info", str(demo_model_path())], terminal_width=160)
    assert result.exit_code == 0
    assert "segmentation loss by epoch" in result.output
    assert "classification loss by epoch" in result.output


@pytest.mark.parametrize("command", ["eval", "calibrate", "bench", "build-engine"])
def test_a_swallowed_stop_ends_the_command_at_its_next_step(
    runner: CliRunner,
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """The signal handler ignores further signals: a stop that the code it interrupted
    swallowed (a finalizer only prints an exception) would leave the command deaf to
    Ctrl-C until its end. It stops at its next step instead, and writes nothing."""
    import torch

    from psicbatch.data.synth import generate
    from psicbatch.run.shutdown import Stopped

    main_thread_only()
    data = tmp_path / "data"
    generate(data, 4, (48, 64), defect_rate=0.5, seed=1)
    out = tmp_path / "out"
    # A benchmark's end-to-end part is a run, which stops at its next batch already.
    engine_only = ["--no-end-to-end", "--no-host-ceiling", "--no-baseline"]
    arguments = {
        "eval": [tiny_checkpoint, data, "--out", out],
        "calibrate": [data, "--model", tiny_checkpoint, "--out", out],
        "bench": [
            "--model",
            tiny_checkpoint,
            "--sizes",
            "64x48",
            "--batch",
            "1",
            "--duration",
            "0.5",
            *engine_only,
            "-o",
            out,
        ],
        "build-engine": [tiny_checkpoint, "--backend", "torch", "--out", out],
    }[command]
    load = torch.load
    swallowed: list[bool] = []

    def loading_swallows_a_stop(*args: object, **kwargs: object) -> object:
        if not swallowed:
            swallowed.append(True)
            with contextlib.suppress(Stopped):  # as by a finalizer
                send_stop()
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", loading_swallows_a_stop)
    result = runner.invoke(main, [command, *map(str, arguments)])
    assert swallowed and result.exit_code == 143, result.output
    assert result.output.splitlines()[-1].startswith("stopped by SIGTERM"), result.output
    assert not out.exists() and not out.with_name("out.lock").exists()


def test_info_shows_numbers_to_six_digits_and_records_in_records_in_parentheses() -> None:
    """A threshold read 0.45000386238098145 and nested records read as Python dicts;
    ``--json`` keeps every digit."""
    from psicbatch.run.results import field_text

    record = {"mode": "two-step", "epochs": {"segmentation": 3}, "loss": 0.3798253297805786}
    assert field_text(record) == "mode=two-step, epochs=(segmentation=3), loss=0.379825"
    assert field_text({"classification": 0.45000386238098145}) == "classification=0.450004"
    assert field_text([0.7302255841967469]) == "[0.730226]"
    assert field_text(["first line", "second"]) == "first line\nsecond"
    assert (field_text({}), field_text(12), field_text("x")) == ("-", "12", "x")
