"""The TensorRT backend, written against the documented TensorRT 10 and 11 Python APIs.

UNVERIFIED: TensorRT cannot be installed on the machines this project is developed and
tested on, so the build and runtime calls below have never run. The pure logic (precision
plan, optimisation profile, compatibility checks) is unit-tested; everything else that a
build shares with the other backends (ONNX export, int8 QDQ quantization, parity check,
manifest) is tested through them.

Precision: TensorRT 10 takes it from builder flags (FP16, BF16, INT8 with a QDQ graph;
INT8 with FP16, so the layers left unquantized run in fp16, not fp32); TensorRT 11
removed those flags and builds strongly typed networks, so the ONNX graph itself is
exported in fp16/bf16, or carries Q/DQ nodes for int8: the quantizer works on fp32
graphs, and the quantized graph's float parts are then cast to fp16 (half_precision.py),
so the layers left unquantized run in fp16 on 11 as on 10.

Profile: the optimum is the engine's input size at the batch ``psicbatch run`` sends by
default (``DEFAULT_BATCH_SIZE``, at most the engine's largest batch), where TensorRT
tunes its kernels; the range is the manifest's (dynamic engines: up to twice the input
size and the largest batch), for which TensorRT sizes its activation memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from psicbatch.engines.base import Engine
from psicbatch.engines.manifest import INPUT_NAME, OUTPUT_NAMES, Manifest
from psicbatch.engines.registry import BACKENDS, SUPPORTED
from psicbatch.errors import PsicbatchError
from psicbatch.precision import DTYPES
from psicbatch.run.options import DEFAULT_BATCH_SIZE

ENGINE_FILE = "model.plan"
TIMING_CACHE = "timing.cache"


@dataclass(frozen=True)
class PrecisionPlan:
    builder_flags: tuple[str, ...]  # names in trt.BuilderFlag
    graph_dtype: str  # float32, float16 or bfloat16: the exported ONNX graph's precision
    quantize: bool  # int8 through Q/DQ nodes in the graph
    qdq_float16: bool = False  # the quantized graph's float parts cast to fp16 (TensorRT 11)


def tensorrt_major(version: str) -> int:
    return int(version.split(".")[0])


def precision_plan(major: int, precision: str) -> PrecisionPlan:
    if major < 10:
        raise PsicbatchError(f"TensorRT {major}.x is not supported; install TensorRT 10 or 11")
    supported = SUPPORTED["tensorrt"]["cuda"]
    if precision not in supported:
        raise PsicbatchError(
            f"TensorRT precision must be one of {', '.join(supported)}: {precision}"
        )
    if major == 10:  # builder flags are named like the precisions: FP16, BF16, INT8
        flags = {"fp32": (), "int8": ("INT8", "FP16")}.get(precision, (precision.upper(),))
        return PrecisionPlan(flags, "float32", precision == "int8")
    dtype = DTYPES.get(precision, torch.float32)  # int8: a float32 graph with Q/DQ nodes
    int8 = precision == "int8"
    return PrecisionPlan((), str(dtype).removeprefix("torch."), int8, qdq_float16=int8)


def profile_shapes(
    manifest: Manifest, opt_batch: int = DEFAULT_BATCH_SIZE
) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) input shapes of the single optimisation profile: the optimum at
    the input size and the batch runs send (within the engine's batch range)."""
    channels = manifest.channels
    return (
        (manifest.min_batch, channels, *manifest.min_size),
        (
            min(max(opt_batch, manifest.min_batch), manifest.max_batch),
            channels,
            *manifest.input_size,
        ),
        (manifest.max_batch, channels, *manifest.max_size),
    )


def compatibility_problem(
    details: dict[str, Any], tensorrt_version: str, gpu_name: str, capability: str
) -> str | None:
    """Why an engine built elsewhere cannot run here, or None. Plans are tied to both the
    exact TensorRT version and the GPU architecture."""
    built_version = details.get("tensorrt_version")
    if built_version != tensorrt_version:
        return f"built with TensorRT {built_version}, this machine has TensorRT {tensorrt_version}"
    built_capability = details.get("compute_capability")
    if built_capability != capability:
        return (
            f"built for {details.get('gpu_name')} (compute capability {built_capability}), "
            f"this machine has {gpu_name} (compute capability {capability})"
        )
    return None


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a one-line error saying whether it is missing or is
    installed without libraries that load (its bindings install where they do not)."""
    problem = BACKENDS["tensorrt"].problem()
    if problem is not None:
        raise PsicbatchError(
            f"TensorRT is {problem}; use --backend auto (fastest available here) or "
            "--backend onnxruntime"
        )
    import tensorrt

    return tensorrt


def current_gpu(device: torch.device | None = None) -> tuple[str, str]:
    """Name and compute capability of ``device``, or of the current CUDA device."""
    if not torch.cuda.is_available():
        raise PsicbatchError("TensorRT needs a CUDA GPU and none is visible")
    index = torch.cuda.current_device() if device is None or device.index is None else device.index
    properties = torch.cuda.get_device_properties(index)
    return properties.name, f"{properties.major}.{properties.minor}"


def build_tensorrt(
    onnx_path: Path,
    directory: Path,
    manifest: Manifest,
    plan: PrecisionPlan,
    workspace_gb: float,
    cache_dir: Path,
) -> dict[str, Any]:
    """Parse the ONNX graph, build one profile, write a plain ``.plan`` (no header)."""
    trt = import_tensorrt()
    gpu_name, capability = current_gpu()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network()
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PsicbatchError(f"{onnx_path}: TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2**30))
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *profile_shapes(manifest))
    config.add_optimization_profile(profile)
    # Timing cache: reused across builds on this GPU, making rebuilds much faster.
    cache_path = cache_dir / f"{TIMING_CACHE}.{capability}.{trt.__version__}"
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PsicbatchError(f"TensorRT failed to build an engine from {onnx_path}")
    (directory / ENGINE_FILE).write_bytes(bytes(serialized))
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {
        "engine_file": ENGINE_FILE,
        "details": {
            "tensorrt_version": trt.__version__,
            "gpu_name": gpu_name,
            "compute_capability": capability,
            "builder_flags": list(plan.builder_flags),
            "graph_dtype": plan.graph_dtype,
            "qdq_float16": plan.qdq_float16,
            "workspace_gb": workspace_gb,
        },
    }


class TensorRTEngine(Engine):
    """Runs a plan with ``execute_async_v3`` on its own CUDA stream of the engine's GPU; the
    input and output buffers are the torch tensors themselves (no copies)."""

    def __init__(
        self, directory: Path, manifest: Manifest, device: torch.device, engine_file: Path
    ) -> None:
        if device.type != "cuda":
            raise PsicbatchError(f"engine {directory}: TensorRT engines run on a CUDA GPU only")
        super().__init__(directory, manifest, device)
        trt = import_tensorrt()
        gpu_name, capability = current_gpu(device)
        problem = compatibility_problem(
            manifest.backend_details, trt.__version__, gpu_name, capability
        )
        if problem:
            raise PsicbatchError(
                f"engine {directory}: {problem}; rebuild it here with 'psicbatch build-engine "
                f"MODEL --backend tensorrt --precision {manifest.precision}'"
            )
        with torch.cuda.device(device):
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = runtime.deserialize_cuda_engine(engine_file.read_bytes())
            if self.engine is None:
                raise PsicbatchError(f"{engine_file}: TensorRT could not load it")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(device)

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count, _, height, width = images.shape
        caller = torch.cuda.current_stream(self.device)
        # The engine's stream starts after whatever produced the input (upload, decoding) and
        # the caller's stream continues only once the outputs are written.
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            batch = images.contiguous()
            probabilities = torch.empty((count,), device=self.device, dtype=torch.float32)
            segmentation = torch.empty(
                (count, 1, height, width), device=self.device, dtype=torch.float32
            )
            self.context.set_input_shape(INPUT_NAME, tuple(batch.shape))
            for name, tensor in zip(
                (INPUT_NAME, *OUTPUT_NAMES), (batch, probabilities, segmentation), strict=True
            ):
                self.context.set_tensor_address(name, tensor.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise PsicbatchError(f"engine {self.directory}: TensorRT execution failed")
        caller.wait_stream(self.stream)
        for tensor in (batch, probabilities, segmentation):
            tensor.record_stream(caller)  # allocated on the engine stream, used on the caller's
        return probabilities, segmentation
