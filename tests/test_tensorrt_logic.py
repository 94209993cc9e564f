"""TensorRT's pure logic, tested without TensorRT (which cannot be installed here)."""

from __future__ import annotations

import pytest

from psicbatch.engines import tensorrt_engine as trt_engine
from psicbatch.engines.manifest import Manifest
from psicbatch.errors import PsicbatchError
from psicbatch.run.options import DEFAULT_BATCH_SIZE


def manifest(**changes: object) -> Manifest:
    fields = dict(
        backend="tensorrt",
        precision="fp16",
        engine_file="model.plan",
        engine_sha256="0" * 64,
        channels=1,
        input_size=(1408, 512),
        min_size=(8, 8),
        max_size=(2816, 1024),
        min_batch=1,
        max_batch=8,
        checkpoint_sha256="1" * 64,
        preprocessing={},
        thresholds={},
        versions={},
    )
    return Manifest(**{**fields, **changes})


def test_module_imports_without_tensorrt() -> None:
    assert trt_engine.ENGINE_FILE == "model.plan"


@pytest.mark.parametrize(
    ("major", "precision", "flags", "dtype", "quantize"),
    [
        (10, "fp32", (), "float32", False),
        (10, "fp16", ("FP16",), "float32", False),
        (10, "bf16", ("BF16",), "float32", False),
        (10, "int8", ("INT8", "FP16"), "float32", True),  # unquantized layers in fp16
        (11, "fp32", (), "float32", False),
        (11, "fp16", (), "float16", False),
        (11, "bf16", (), "bfloat16", False),
        (11, "int8", (), "float32", True),
    ],
)
def test_precision_comes_from_flags_on_10_and_from_the_graph_on_11(
    major: int, precision: str, flags: tuple, dtype: str, quantize: bool
) -> None:
    plan = trt_engine.precision_plan(major, precision)
    assert (plan.builder_flags, plan.graph_dtype, plan.quantize) == (flags, dtype, quantize)
    # int8 on 11: the layers outside the Q/DQ pairs in fp16, as INT8 + FP16 gives on 10
    assert plan.qdq_float16 == (major == 11 and precision == "int8")


def test_old_tensorrt_and_unknown_precision_are_refused() -> None:
    with pytest.raises(PsicbatchError, match=r"TensorRT 8\.x is not supported"):
        trt_engine.precision_plan(8, "fp16")
    with pytest.raises(PsicbatchError, match="must be one of fp16, fp32, bf16, int8: fp8"):
        trt_engine.precision_plan(10, "fp8")


def test_version_parsing() -> None:
    assert trt_engine.tensorrt_major("10.13.0.35") == 10
    assert trt_engine.tensorrt_major("11.4.1") == 11


def test_profile_covers_batch_and_size_range() -> None:
    low, opt, high = trt_engine.profile_shapes(manifest(), opt_batch=4)
    assert low == (1, 1, 8, 8)
    assert opt == (4, 1, 1408, 512)
    assert high == (8, 1, 2816, 1024)
    assert trt_engine.profile_shapes(manifest(), opt_batch=64)[1][0] == 8
    # By default the optimum is the batch psicbatch run sends by default.
    assert trt_engine.profile_shapes(manifest())[1][0] == DEFAULT_BATCH_SIZE


def test_engine_from_another_version_or_gpu_is_explained() -> None:
    details = {
        "tensorrt_version": "10.13.0",
        "gpu_name": "NVIDIA A100",
        "compute_capability": "8.0",
    }
    assert trt_engine.compatibility_problem(details, "10.13.0", "NVIDIA A100", "8.0") is None
    version = trt_engine.compatibility_problem(details, "11.4.1", "NVIDIA A100", "8.0")
    assert version == "built with TensorRT 10.13.0, this machine has TensorRT 11.4.1"
    gpu = trt_engine.compatibility_problem(details, "10.13.0", "NVIDIA H100", "9.0")
    assert "built for NVIDIA A100 (compute capability 8.0)" in gpu and "NVIDIA H100" in gpu
