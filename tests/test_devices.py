"""One --device syntax for every command, checked against the GPUs visible here."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from psicbatch import devices
from psicbatch.cli import main
from psicbatch.commands.options import Devices
from psicbatch.devices import (
    cpu_build_of_torch,
    default_device,
    parse_devices,
    resolve_device,
    run_devices,
)
from psicbatch.errors import PsicbatchError
from psicbatch.run.options import RunOptions
from psicbatch.run.runner import devices_said, worker_devices
from psicbatch.run.watch import watch_device
from tests.fresh_process import exits_in_a_fresh_process


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_build_of_torch", lambda: False)  # a CUDA build
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "NVIDIA H100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (9, 0))


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("auto", ("cuda:0",)),
        ("cpu", ("cpu",)),
        ("cuda", ("cuda:0",)),
        ("cuda:1", ("cuda:1",)),
        ("1", ("cuda:1",)),
        ("0,1", ("cuda:0", "cuda:1")),
        ("cuda:0, cuda:1", ("cuda:0", "cuda:1")),
        ("all", ("cuda:0", "cuda:1")),
        (" CPU ", ("cpu",)),
    ],
)
def test_every_spelling_resolves_to_cpu_or_a_numbered_gpu(two_gpus, value, expected) -> None:
    assert parse_devices(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2", "GPU 2 does not exist here (2 GPUs are visible)"),
        ("0,0", "a GPU is named twice"),
        ("cpu,0", "expected auto, cpu, cuda, cuda:N or N, or GPUs as 0,1 or all"),
        ("gpu", "expected auto, cpu"),
        ("cuda:-1", "expected auto, cpu"),
    ],
)
def test_bad_devices_are_one_line_errors(two_gpus, value, message) -> None:
    with pytest.raises(PsicbatchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_devices(value)


def test_without_a_gpu_auto_is_the_cpu_and_gpus_are_refused(no_gpu) -> None:
    assert parse_devices("auto") == ("cpu",) and resolve_device("auto") == "cpu"
    for value in ("cuda", "0", "all"):
        with pytest.raises(PsicbatchError, match="no GPU is visible"):
            parse_devices(value)


def test_a_run_takes_every_gpu_by_default_and_a_watch_the_first(two_gpus) -> None:
    auto = Devices(several=True).convert("auto", None, None)
    assert auto == run_devices(" AUTO ") == ()  # left for what runs to choose
    assert run_devices("1") == ("cuda:1",)
    assert worker_devices(RunOptions(Path("r.parquet"), devices=auto)) == ["cuda:0", "cuda:1"]
    two_each = RunOptions(Path("r.parquet"), devices=auto, workers=2)
    assert worker_devices(two_each) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert watch_device(RunOptions(Path("out"), devices=auto)) == "cuda:0"
    assert watch_device(RunOptions(Path("out"), devices=("cuda:1",))) == "cuda:1"
    with pytest.raises(PsicbatchError, match="--watch runs on one device; give one --device"):
        watch_device(RunOptions(Path("out"), devices=("cuda:0", "cuda:1")))


def test_a_run_by_default_leaves_out_gpus_of_another_kind(
    two_gpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    kinds = {
        0: ("NVIDIA H100", (9, 0)),
        1: ("NVIDIA RTX A2000", (8, 6)),
        2: ("NVIDIA H100", (9, 0)),
    }
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: kinds[index][0])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: kinds[index][1])
    assert worker_devices(RunOptions(Path("r.parquet"))) == ["cuda:0", "cuda:2"]
    assert parse_devices("all") == ("cuda:0", "cuda:1", "cuda:2")  # named: every one


def test_without_a_gpu_a_run_and_a_watch_take_the_cpu(no_gpu) -> None:
    assert worker_devices(RunOptions(Path("r.parquet"), workers=2)) == ["cpu", "cpu"]
    assert watch_device(RunOptions(Path("out"))) == "cpu"


@pytest.mark.parametrize(
    ("devices", "said"),
    [
        (["cpu"], "cpu"),
        (["cpu", "cpu"], "cpu (2 workers)"),
        (["cuda:0", "cuda:1"], "cuda:0, cuda:1"),
        (["cuda:0", "cuda:0", "cuda:1", "cuda:1"], "cuda:0, cuda:1 (2 workers each)"),
    ],
)
def test_a_run_names_every_device_its_workers_ran_on(devices: list[str], said: str) -> None:
    assert devices_said(devices) == said


def test_one_device_commands_refuse_a_list(two_gpus) -> None:
    assert resolve_device("1") == "cuda:1"
    with pytest.raises(PsicbatchError, match="this command runs on one device"):
        resolve_device("0,1")


@pytest.mark.parametrize(
    "command",
    [
        ["run", "images"],
        ["run", "images", "--devices"],  # the spelling run also takes
        ["train", "data"],
        ["eval", "model.pt", "data"],
        ["cv", "data"],
        ["bench"],
        ["build-engine", "model.pt"],
    ],
)
def test_every_command_checks_its_device_before_any_work(no_gpu, command) -> None:
    flag = [] if command[-1] == "--devices" else ["--device"]
    result = CliRunner().invoke(main, [*command, *flag, "cuda:3"])
    assert result.exit_code == 2, result.output
    assert "device 'cuda:3': GPU 3 does not exist here (no GPU is visible)" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("version", "sees_a_gpu", "expected"),
    [
        ("2.13.0+cpu", True, "cpu"),  # a CPU build is not asked: it cannot see one
        ("2.13.0+cu130", True, "cuda:0"),
        ("2.13.0", True, "cuda:0"),  # unlabelled (PyPI's CUDA wheels): asked
        ("2.13.0+cu130", False, "cpu"),
    ],
)
def test_auto_is_the_first_gpu_torch_sees_and_a_cpu_build_sees_none(
    monkeypatch: pytest.MonkeyPatch, version: str, sees_a_gpu: bool, expected: str
) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: version)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: sees_a_gpu)
    assert default_device() == expected


@pytest.mark.skipif(not cpu_build_of_torch(), reason="torch here is not a CPU build")
def test_what_run_and_eval_are_given_wrongly_is_said_before_torch_loads(tmp_path: Path) -> None:
    """On a CPU build, --device auto needs no torch, and run's inputs and eval's
    arguments are checked before the work imports it: a mistake is said at once."""
    exits, printed = exits_in_a_fresh_process(["run", str(tmp_path)], ["eval"])
    assert exits == ["1 False", "2 False"], printed
    assert "no input images in" in printed and "give CHECKPOINT DATA" in printed
