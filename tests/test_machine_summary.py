"""``psicbatch info`` without a path: what psicbatch detects on this machine and will do."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from psicbatch import hardware, machine_summary
from psicbatch.cli import main
from psicbatch.engines.build import tensorrt_usable
from psicbatch.engines.registry import BACKENDS
from psicbatch.engines.tensorrt_engine import import_tensorrt
from psicbatch.errors import PsicbatchError

AVX2 = hardware.CpuPrecisions("AVX2", bf16=False, fp16=False, int8_dot=False)
MISSING_LIBRARY = "libnvinfer.so.10: cannot open shared object file: No such file or directory"


def test_the_table_shows_this_machine_and_each_backend() -> None:
    result = CliRunner().invoke(main, ["info"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "psicbatch on this machine" in result.output
    assert hardware.cpu_precisions().describe().split(";")[0] in result.output
    for name, entry in BACKENDS.items():
        assert f"backend {name}" in result.output
        if not entry.installed():  # the install hint keeps its [extra]: not read as markup
            assert entry.install_hint in result.output


def test_an_avx2_cpu_gets_fp32_and_conv10_in_the_frequency_domain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hardware, "cpu_precisions", lambda: AVX2)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    shown = json.loads(CliRunner().invoke(main, ["info", "--json"]).output)
    assert shown["cpu instructions"] == AVX2.describe()
    assert shown["torch on the cpu"].startswith("auto: fp32, this CPU has no native bf16")
    assert shown["conv10 on the cpu"] == "frequency domain in fp32"
    assert shown["training layout on the cpu"] == "contiguous"
    assert shown["build-engine auto"].startswith("times torch fp32, ")
    assert "torch bf16" not in shown["build-engine auto"]
    assert shown["build-engine auto"].endswith("int8 too, last: no int8 dot products here)")


def test_an_amx_cpu_gets_bf16_and_conv10_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    amx = hardware.CpuPrecisions("AVX512", bf16=True, fp16=True, int8_dot=True)
    monkeypatch.setattr(hardware, "cpu_precisions", lambda: amx)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"amx_bf16", "amx_tile"}))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    shown = machine_summary.machine_summary()
    # Why, without the instruction line the row above already shows.
    assert shown["torch on the cpu"] == "auto: bf16, computed in AMX tiles on this CPU"
    assert shown["conv10 on the cpu"] == "direct in bf16"
    assert shown["training layout on the cpu"] == "channels_last"
    assert shown["build-engine auto"].startswith("times torch bf16, ")
    assert shown["build-engine auto"].endswith("(with --calib int8 too, first)")


@pytest.mark.parametrize(
    ("package", "torch_cuda", "expected"),
    [
        ("nvidia-dali-cuda120", "12.8", "decodes on GPUs"),
        (
            "nvidia-dali-cuda120",
            "13.0",
            "built for CUDA 12, torch for CUDA 13: pip install 'psicbatch[dali-cuda13]'",
        ),
        ("nvidia-dali-cuda130", "12.4", "torch for CUDA 12: pip install 'psicbatch[dali]'"),
        ("nvidia-dali-cuda130", "11.8", "built for CUDA 13, torch for CUDA 11"),
        ("nvidia-dali-cuda120", None, "its CPU operators only"),
    ],
)
def test_dali_is_checked_against_torchs_cuda(
    package: str, torch_cuda: str | None, expected: str
) -> None:
    note = machine_summary.dali_note(package, "2.4.0", torch_cuda)
    assert note.startswith(f"{package} 2.4.0: ") and expected in note
    assert note.endswith("CUDA 11") == (torch_cuda == "11.8")  # no extra to suggest there


@pytest.fixture
def tensorrt_without_libraries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``tensorrt`` module that fails as TensorRT's bindings do without its libraries."""
    (tmp_path / "tensorrt.py").write_text(f"raise ImportError({MISSING_LIBRARY!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)


@pytest.mark.usefixtures("tensorrt_without_libraries")
def test_tensorrt_installed_without_its_libraries_is_named_so() -> None:
    status = machine_summary.backend_status(BACKENDS["tensorrt"])
    assert status == (
        f"installed, but does not load (ImportError: {MISSING_LIBRARY}); runs cuda fp16, fp32, "
        "bf16, int8"
    )
    assert not tensorrt_usable("cuda:0")  # build-engine auto then builds torch on the GPU
    with pytest.raises(PsicbatchError, match="TensorRT is installed, but does not load"):
        import_tensorrt()


def test_a_backend_not_installed_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    if BACKENDS["tensorrt"].installed():
        pytest.skip("TensorRT is installed here")
    status = machine_summary.backend_status(BACKENDS["tensorrt"])
    assert status.startswith("not installed (pip install 'psicbatch[tensorrt]'); runs cuda")
    with pytest.raises(PsicbatchError, match="TensorRT is not installed"):
        import_tensorrt()


def test_no_gpu_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    assert machine_summary.gpus() == "none: this torch is built without CUDA"
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert machine_summary.gpus() == "none visible (CUDA_VISIBLE_DEVICES='')"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert machine_summary.gpus().startswith("none visible: no GPU or driver")


def test_the_limits_every_reader_applies_are_shown_with_their_variables() -> None:
    """A line engineer whose line-scan images are refused, or whose share is slow, sees
    the limits in force and what moves them."""
    import os
    import subprocess
    import sys

    shown = machine_summary.machine_summary()
    assert shown["limits"] == (
        "images up to 100 megapixels (PSICBATCH_MAX_MEGAPIXELS); a dataset's file read, "
        "a path or folder looked at, within 60 s (PSICBATCH_READ_TIMEOUT)"
    )
    moved = {"PSICBATCH_MAX_MEGAPIXELS": "400", "PSICBATCH_READ_TIMEOUT": "300"}
    said = "from psicbatch.machine_summary import limits; print(limits())"
    finished = subprocess.run(
        [sys.executable, "-c", said], env={**os.environ, **moved}, capture_output=True, text=True
    )
    assert finished.stdout.strip() == (
        "images up to 400 megapixels (PSICBATCH_MAX_MEGAPIXELS); a dataset's file read, "
        "a path or folder looked at, within 300 s (PSICBATCH_READ_TIMEOUT)"
    ), finished.stderr
