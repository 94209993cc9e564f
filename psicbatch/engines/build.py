"""``psicbatch build-engine``: checkpoint -> engine folder (engine file + manifest.json).

Every backend goes through the same steps: resolve and validate options, build into a
staging folder, load the result through the common engine interface, measure parity
against the fp32 checkpoint, and only then move the folder into place.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psicbatch import __version__
from psicbatch.checkpoint import Checkpoint, file_sha256, load_checkpoint
from psicbatch.engines import default_device, load_engine
from psicbatch.engines.export import export_onnx
from psicbatch.engines.manifest import Manifest
from psicbatch.engines.parity import (
    MIN_MASK_IOU,
    measure_parity,
    parity_problem,
    synthetic_parity_images,
)
from psicbatch.engines.quantize import quantize_int8
from psicbatch.errors import PsicbatchError
from psicbatch.model import STRIDE
from psicbatch.precision import resolve_precision
from psicbatch.preprocess import load_folder
from psicbatch.versions import installed_versions

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")


@dataclass(frozen=True)
class BuildOptions:
    backend: str = "auto"
    precision: str = "auto"
    input_size: tuple[int, int] | None = None  # default: the checkpoint's training size
    max_batch: int = 16
    calib: Path | None = None
    out: Path | None = None
    dynamic_size: bool = True
    threads: int = 0
    compile: bool = False
    workspace_gb: float = 4.0
    cache_dir: Path | None = None  # TensorRT timing cache; default: beside the engine folder
    check_parity: bool = True
    min_mask_iou: float = MIN_MASK_IOU


def tensorrt_usable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_backend(backend: str) -> str:
    """``auto``: TensorRT with a GPU; otherwise torch, the fastest option measured on CPUs
    (bf16 + channels_last, 2.5x ONNX Runtime fp32; benchmarks/results/cpu-backends/)."""
    if backend == "auto":
        return "tensorrt" if tensorrt_usable() else "torch"
    if backend == "tensorrt":
        from psicbatch.engines.tensorrt_engine import import_tensorrt

        import_tensorrt()
    return backend


def build_precision(backend: str, precision: str, calib: Path | None) -> str:
    """The precision to build, for this machine's default device; int8 needs images."""
    precision = resolve_precision(precision, backend, default_device())
    if precision == "int8" and calib is None:
        raise PsicbatchError(
            "--precision int8 needs --calib DIR: a folder of representative images to "
            "calibrate the quantization ranges"
        )
    return precision


def calibration_images(
    folder: Path, checkpoint: Checkpoint, size: tuple[int, int], limit: int = 64
) -> np.ndarray:
    """Up to ``limit`` images spread over ``folder``, preprocessed as the checkpoint says."""
    if not folder.is_dir():
        raise PsicbatchError(f"{folder}: calibration folder not found")
    return load_folder(folder, checkpoint.preprocessing.at_size(size), limit).numpy()


def engine_size(checkpoint: Checkpoint, requested: tuple[int, int] | None) -> tuple[int, int]:
    """The engine's preferred input size, rounded up to a multiple of 8."""
    height, width = requested or checkpoint.preprocessing.input_size
    return (-(-height // STRIDE) * STRIDE, -(-width // STRIDE) * STRIDE)


def size_range(size: tuple[int, int], dynamic: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """Dynamic engines accept 8x8 up to twice the preferred size; fixed ones exactly it."""
    if not dynamic:
        return size, size
    return (STRIDE, STRIDE), (2 * size[0], 2 * size[1])


def default_directory(checkpoint_path: Path, backend: str, precision: str, size: tuple) -> Path:
    return Path("engines") / f"{checkpoint_path.stem}-{backend}-{precision}-{size[0]}x{size[1]}"


def build_engine(checkpoint_path: Path, options: BuildOptions) -> tuple[Path, Manifest]:
    checkpoint = load_checkpoint(checkpoint_path)
    if options.max_batch < 1:
        raise PsicbatchError(f"--max-batch must be at least 1, got {options.max_batch}")
    backend = resolve_backend(options.backend)
    precision = build_precision(backend, options.precision, options.calib)
    size = engine_size(checkpoint, options.input_size)
    directory = options.out or default_directory(checkpoint_path, backend, precision, size)
    parity_images = (
        calibration_images(options.calib, checkpoint, size)
        if options.calib
        else synthetic_parity_images(checkpoint, size)
    )
    manifest = draft_manifest(
        checkpoint_path,
        checkpoint,
        backend,
        precision,
        size,
        options.dynamic_size,
        options.max_batch,
    )
    staging = directory.with_name(f".{directory.name}.building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        result = _build_backend(
            checkpoint_path, checkpoint, manifest, options, staging, parity_images
        )
        manifest.engine_file = result["engine_file"]
        manifest.backend_details = result["details"]
        manifest.engine_sha256 = file_sha256(staging / manifest.engine_file)
        manifest.write(staging)
        device = default_device()
        manifest.parity = measure_parity(load_engine(staging, device), checkpoint, parity_images)
        manifest.parity["device"] = device
        manifest.write(staging)
        problem = parity_problem(manifest.parity, options.min_mask_iou)
        if problem and options.check_parity:
            raise PsicbatchError(
                f"parity check failed: {problem}; the engine was not written "
                "(--no-parity-check keeps it anyway)"
            )
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory, manifest


def draft_manifest(
    checkpoint_path: Path,
    checkpoint: Checkpoint,
    backend: str,
    precision: str,
    size: tuple[int, int],
    dynamic_size: bool,
    max_batch: int,
) -> Manifest:
    """Everything the manifest says before the engine file exists."""
    min_size, max_size = size_range(size, dynamic_size)
    return Manifest(
        backend=backend,
        precision=precision,
        engine_file="",
        engine_sha256="",
        channels=checkpoint.model_config.in_channels,
        input_size=size,
        min_size=min_size,
        max_size=max_size,
        min_batch=1,
        max_batch=max_batch,
        checkpoint_sha256=file_sha256(checkpoint_path),
        preprocessing=checkpoint.preprocessing.to_dict(),
        thresholds=asdict(checkpoint.thresholds),
        versions=_library_versions(backend),
        model=checkpoint.model_config.to_dict(),
    )


def checkpoint_manifest(
    checkpoint_path: Path,
    precision: str = "auto",
    device: str = "cpu",
    max_batch: int = 64,
    input_size: tuple[int, int] | None = None,
) -> Manifest:
    """The manifest of a torch engine that runs a checkpoint file in place on ``device``
    (``auto`` precision: fp16 on a GPU, bf16 on the CPU)."""
    checkpoint = load_checkpoint(checkpoint_path)
    precision = resolve_precision(precision, "torch", device)
    size = engine_size(checkpoint, input_size)
    manifest = draft_manifest(
        checkpoint_path, checkpoint, "torch", precision, size, True, max_batch
    )
    manifest.engine_file = str(checkpoint_path.resolve())
    manifest.engine_sha256 = manifest.checkpoint_sha256
    manifest.backend_details = {"compile": False}
    return manifest


def _build_backend(
    checkpoint_path: Path,
    checkpoint: Checkpoint,
    manifest: Manifest,
    options: BuildOptions,
    staging: Path,
    calibration: Any,
) -> dict[str, Any]:
    if manifest.backend == "torch":
        from psicbatch.engines.torch_engine import build_torch

        return build_torch(checkpoint_path, staging, options.compile)
    size, max_batch = manifest.input_size, manifest.max_batch
    work = staging / "work"
    work.mkdir()
    try:
        if manifest.backend == "onnxruntime":
            from psicbatch.engines.ort_engine import build_onnxruntime

            graph = export_onnx(
                checkpoint, work / "fp32.onnx", size, max_batch, options.dynamic_size
            )
            if manifest.precision == "int8":
                graph = quantize_int8(graph, work / "int8.onnx", calibration)
            return build_onnxruntime(graph, staging, options.threads)
        import tensorrt

        from psicbatch.engines.tensorrt_engine import (
            build_tensorrt,
            precision_plan,
            tensorrt_major,
        )

        plan = precision_plan(tensorrt_major(tensorrt.__version__), manifest.precision)
        dtype = getattr(torch, plan.graph_dtype)
        graph = export_onnx(
            checkpoint, work / "model.onnx", size, max_batch, options.dynamic_size, dtype
        )
        if plan.quantize:
            graph = quantize_int8(graph, work / "int8.onnx", calibration)
        return build_tensorrt(
            graph,
            staging,
            manifest,
            plan,
            max_batch,
            options.workspace_gb,
            options.cache_dir or staging.parent / ".timing-cache",  # beside the engine folder
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _library_versions(backend: str) -> dict[str, str]:
    names = {
        "torch": ["torch"],
        "onnxruntime": ["torch", "onnx", "onnxruntime"],
        "tensorrt": ["torch", "onnx", "onnxruntime", "tensorrt"],
    }[backend]
    return {"psicbatch": __version__, **installed_versions(names)}
