"""What ``auto`` means on the machine at hand: native-precision detection, every command's
``auto`` on CPUs with and without native bf16, and the measured engine choice."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from psicbatch import hardware
from psicbatch.assets import demo_model_path
from psicbatch.bench.machine import faster_configuration_advice
from psicbatch.data.masks import DefectMasks
from psicbatch.data.memory import TensorDataset
from psicbatch.engines import build, tuning
from psicbatch.engines.build import BuildOptions, checkpoint_manifest, choose_engine
from psicbatch.engines.build_options import MIN_MASK_IOU
from psicbatch.engines.registry import Backend
from psicbatch.engines.spec import EngineSpec, describe_engine
from psicbatch.engines.tuning import Candidate, tune
from psicbatch.errors import PsicbatchError
from psicbatch.run.runner import RunOptions, describe_run, worker_devices
from psicbatch.train import Trainer
from psicbatch.train_options import TrainOptions
from tests.stops import main_thread_only, send_stop

AVX2 = hardware.CpuPrecisions("AVX2", bf16=False, fp16=False, int8_dot=False)
AVX512_BF16 = hardware.CpuPrecisions("AVX512", bf16=True, fp16=False, int8_dot=True)


def test_detection_follows_what_torch_and_the_cpu_report(monkeypatch: pytest.MonkeyPatch) -> None:
    for native, flags in ((True, {"avx512_bf16", "avx512_vnni"}), (False, {"avx2", "fma"})):
        hardware.cpu_precisions.cache_clear()
        monkeypatch.setattr(hardware, "_onednn_says", lambda check, native=native: native)
        monkeypatch.setattr(hardware, "cpu_flags", lambda flags=flags: flags)
        found = hardware.cpu_precisions()
        assert (found.bf16, found.fp16, found.int8_dot) == (native, native, native)
        assert ("native bf16, fp16" in found.describe()) == native
    monkeypatch.undo()  # the real helpers again, before the cache holds a mocked answer
    hardware.cpu_precisions.cache_clear()
    real = hardware.cpu_precisions()  # this machine, whatever it is: a consistent answer
    assert real.capability and real.bf16 == hardware._onednn_says("_is_mkldnn_bf16_supported")


def test_the_cpu_line_names_amx_tiles_and_kernels_held_to_older_instructions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Figures measured with kernels held to AVX2 must not read as the CPU's own."""
    for name in hardware.ISA_LIMITS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert AVX2.describe() == "CPU capability AVX2; no native bf16/fp16; no int8 dot products"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"amx_bf16", "amx_int8"}))
    assert AVX512_BF16.describe().endswith("; AMX for bf16, int8")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # tiles oneDNN may not use are not named
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert AVX2.describe() == (
        "CPU capability AVX2; no native bf16/fp16; no int8 dot products; "
        "kernels held by ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"
    )


def test_amx_counts_only_where_onednn_may_use_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    for limit, uses in (
        (None, True),
        ("AVX512_CORE_AMX", True),
        ("avx512_core_amx_fp16", True),
        ("ALL", True),
        ("AVX512_CORE_BF16", False),
        ("AVX2", False),
    ):
        if limit is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        assert hardware.onednn_uses_amx("bf16") is uses, limit
        assert not hardware.onednn_uses_amx("fp16")  # no AMX-FP16 tiles on this CPU
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert not hardware.onednn_uses_amx("bf16")


def test_a_convolution_is_timed_once_per_type() -> None:
    first = hardware.convolution_ms(torch.float32)
    assert 0 < first < 10_000 and hardware.convolution_ms(torch.float32) == first


@pytest.mark.parametrize(
    ("cpu", "amx", "bf16_ms", "expected"),
    [
        (AVX2, False, None, "fp32"),
        (AVX512_BF16, True, None, "bf16"),
        (AVX512_BF16, False, 14.3, "fp32"),  # as the AMX Xeon measured with oneDNN held
        (AVX512_BF16, False, 4.0, "bf16"),
    ],
)
def test_every_auto_follows_the_cpu(
    cpu: hardware.CpuPrecisions,
    amx: bool,
    bf16_ms: float | None,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Native bf16 without AMX: whichever type ran the convolution faster."""
    timed = []

    def convolution_ms(dtype: torch.dtype) -> float:
        timed.append(dtype)
        assert bf16_ms is not None, "timed only where bf16 is native without AMX"
        return bf16_ms if dtype == torch.bfloat16 else 8.7

    monkeypatch.setattr(hardware, "cpu_precisions", lambda: cpu)
    monkeypatch.setattr(hardware, "onednn_uses_amx", lambda precision: amx)
    monkeypatch.setattr(hardware, "convolution_ms", convolution_ms)
    data = TensorDataset(
        torch.zeros(2, 1, 32, 32, dtype=torch.uint8),
        DefectMasks(2, (32, 32)),
        torch.tensor([False, True]),
        [(32, 32)] * 2,
    )
    trainer = Trainer(data, TrainOptions(device="cpu"), tmp_path / "m.pt")
    assert trainer.precision == expected and cpu.describe() in trainer.precision_choice.reason
    run = RunOptions(out=tmp_path / "r.parquet", devices=("cpu",))
    manifest = describe_run(EngineSpec(checkpoint=demo_model_path()), run, worker_devices(run))[
        "manifest"
    ]
    assert manifest["precision"] == expected and f"auto: {expected}" in manifest["selection"]
    evaluated = describe_engine(EngineSpec(checkpoint=demo_model_path()), "cpu")  # eval, bench
    assert evaluated.precision == expected
    if not torch.cuda.is_available():
        choice = choose_engine(BuildOptions(tune=False))  # build-engine --no-tune
        assert (choice.backend, choice.precision) == ("torch", expected)
    other = "bf16" if expected == "fp32" else "fp32"
    slower = checkpoint_manifest(demo_model_path(), precision=other)
    assert faster_configuration_advice(slower, "cpu").startswith(f"--precision {expected}")
    native = checkpoint_manifest(demo_model_path(), precision=expected)
    assert not (faster_configuration_advice(native, "cpu") or "").startswith("--precision")
    assert bool(timed) == (bf16_ms is not None)
    if timed:
        assert "a 5x5 convolution took" in trainer.precision_choice.reason


def test_bench_names_the_fastest_engine_of_a_measured_build() -> None:
    manifest = checkpoint_manifest(demo_model_path(), precision="fp32")
    manifest.tuning = [
        {"backend": "torch", "precision": "fp32", "seconds_per_image": 0.009},
        {"backend": "openvino", "precision": "fp32", "seconds_per_image": 0.004},
        {"backend": "onnxruntime", "precision": "int8", "seconds_per_image": None},
    ]
    assert faster_configuration_advice(manifest, "cpu").startswith("openvino fp32 was the fastest")
    manifest.backend = "openvino"
    assert faster_configuration_advice(manifest, "cpu") is None
    assert faster_configuration_advice(manifest, "cuda:0") is None


def test_tuning_keeps_the_fastest_candidate_that_keeps_parity() -> None:
    candidates = [
        Candidate(b, p)
        for b, p in (("openvino", "int8"), ("torch", "fp32"), ("onnxruntime", "fp32"))
    ]
    timings = {"openvino int8": 0.001, "torch fp32": 0.009, "onnxruntime fp32": 0.004}

    def build(candidate: Candidate) -> str:
        if candidate.label == "openvino int8":  # fastest, but disagrees with fp32
            raise PsicbatchError(f"parity check failed: mask IoU below {MIN_MASK_IOU}")
        return candidate.label

    trials, best = tune(candidates, build, lambda built, seconds: timings[built], budget=60)
    assert best == "onnxruntime fp32"
    assert [t.outcome.split(":")[0] for t in trials] == ["not used", "timed", "timed"]
    assert trials[0].seconds_per_image is None and "parity check failed" in trials[0].outcome


def test_a_stop_that_a_library_turned_into_an_error_still_stops_the_tuning() -> None:
    """Ctrl-C during the ONNX export's imports once read as "onnx is missing": the build
    went on with the next candidate and finished, the signal lost."""
    from psicbatch.run.shutdown import Stopped, signals_stop

    main_thread_only()

    def build(candidate: Candidate) -> str:
        try:
            send_stop(signal.SIGINT)
        except Stopped:
            raise PsicbatchError("ONNX export needs the 'onnx' extra") from None
        return candidate.label

    candidates = [Candidate("openvino", "fp32"), Candidate("torch", "fp32")]
    with pytest.raises(Stopped), signals_stop():
        tune(candidates, build, lambda built, seconds: 0.001, budget=60)
    with signals_stop():  # a later block starts with no stop asked
        assert tune(candidates[1:], lambda c: c.label, lambda b, s: 0.001)[1] == "torch fp32"


def test_tuning_stops_when_the_budget_is_spent() -> None:
    now = [0.0]
    shares = []

    def build(candidate: Candidate) -> str:
        now[0] += 35.0  # each build takes 35 s of the 60 s budget: the third never starts
        return candidate.label

    def measure(built: str, seconds: float) -> float:
        shares.append(seconds)
        return {"torch fp32": 0.02, "onnxruntime fp32": 0.01}.get(built, 0.001)

    candidates = [
        Candidate("torch", "fp32"),
        Candidate("onnxruntime", "fp32"),
        Candidate("openvino", "fp32"),
    ]
    trials, best = tune(candidates, build, measure, budget=60, clock=lambda: now[0])
    assert best == "onnxruntime fp32"  # the third, faster one was never reached
    assert trials[2].outcome.startswith("skipped: the time budget was spent")
    assert all(share <= 60 for share in shares)
    nothing, none = tune(candidates, build, measure, budget=0, clock=lambda: now[0])
    assert none is None and all(t.outcome.startswith("skipped") for t in nothing)


@pytest.mark.parametrize(
    ("cpu", "amx", "expected"),
    [
        (AVX2, False, ["torch fp32", "openvino fp32", "onnxruntime fp32", "openvino int8"]),
        (
            AVX512_BF16,
            True,
            ["openvino int8", "torch bf16", "openvino fp32", "onnxruntime fp32", "torch fp32"],
        ),
    ],
)
def test_tuning_times_the_likely_winners_first(
    cpu: hardware.CpuPrecisions, amx: bool, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget may run out after one candidate at the paper's size: torch in auto's
    precision leads the floats, and int8 goes last where the CPU has no int8 dot products
    (slower than torch fp32 there)."""
    monkeypatch.setattr(hardware, "cpu_precisions", lambda: cpu)
    monkeypatch.setattr(hardware, "onednn_uses_amx", lambda precision: amx)
    monkeypatch.setattr(tuning, "installed_cpu_int8", lambda: ["openvino"])
    monkeypatch.setattr(Backend, "installed", lambda backend: backend.name != "tensorrt")
    assert [c.label for c in tuning.cpu_candidates(calibrated=True)] == expected
    assert "int8" not in str([c.label for c in tuning.cpu_candidates(calibrated=False)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks TensorRT where it can")
def test_no_tune_keeps_the_float_engine_where_the_cpu_has_no_int8_dot_products(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "cpu_int8_backend", lambda: "openvino")
    monkeypatch.setattr(build, "tensorrt_usable", lambda device: False)
    for cpu, expected in ((AVX2, ("torch", "fp32")), (AVX512_BF16, ("openvino", "int8"))):
        monkeypatch.setattr(hardware, "cpu_precisions", lambda cpu=cpu: cpu)
        monkeypatch.setattr(hardware, "onednn_uses_amx", lambda precision: True)
        choice = build.choose_engine(BuildOptions(calib=tmp_path, tune=False))
        assert (choice.backend, choice.precision) == expected
    monkeypatch.setattr(hardware, "cpu_precisions", lambda: AVX2)
    reason = build.choose_engine(BuildOptions(calib=tmp_path, tune=False)).reason
    assert reason.startswith("this CPU has no int8 dot products, where int8 engines ran slower")


@pytest.mark.parametrize(
    ("capability", "chosen"),
    [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")],
)
def test_training_on_a_gpu_takes_bf16_only_where_it_is_native(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], chosen: str
) -> None:
    """A T4 (7.5) or V100 (7.0) emulates bf16, which torch's own check counts as support:
    auto trains those in fp16 (with loss scaling), Ampere (8.0) and later in bf16."""
    from psicbatch.precision import choose_precision

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert choose_precision("auto", "torch", "cuda:0", training=True).precision == chosen
