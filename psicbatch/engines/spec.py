"""Which engine a run uses and how it is opened on a device: ``open_engine(spec, device)``.

A spec is plain data (it travels to worker processes); the engine itself is opened in the
process and on the device that runs it. ``describe_engine`` gives the manifest of that
same engine without loading it, so the results file records what actually ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from psicbatch.engines.base import Engine
from psicbatch.engines.frequency_conv import with_large_kernel_method
from psicbatch.engines.loading import load_engine
from psicbatch.engines.manifest import Manifest, read_manifest
from psicbatch.errors import PsicbatchError


@dataclass(frozen=True)
class EngineSpec:
    """A built engine folder, a checkpoint (run with the torch backend) or, for measuring
    the host side, the null engine's kind of outputs."""

    engine_dir: Path | None = None
    checkpoint: Path | None = None
    precision: str = "auto"
    input_size: tuple[int, int] | None = None  # checkpoints and null: run at this size
    null_outputs: str | None = None

    @property
    def source(self) -> Path:
        """Where the engine is read from, as messages name it (the null engine: nowhere)."""
        return self.engine_dir or self.checkpoint or Path("the null engine")


def describe_engine(spec: EngineSpec, device: str, max_batch: int = 64) -> Manifest:
    """The manifest of the engine ``open_engine`` gives on ``device``; for torch, with how
    it computes its large kernels there (``backend_details["large_kernels"]``)."""
    if spec.engine_dir is not None:
        manifest = read_manifest(spec.engine_dir)
    elif spec.null_outputs is not None:
        from psicbatch.engines.null_engine import null_manifest

        return null_manifest(_null_size(spec), max_batch)
    else:
        from psicbatch.engines.build import checkpoint_manifest

        manifest = checkpoint_manifest(
            _checkpoint(spec), spec.precision, device, max_batch, spec.input_size
        )
    if manifest.backend == "torch":
        return with_large_kernel_method(manifest, torch.device(device))
    return manifest


def engine_input_size(spec: EngineSpec) -> tuple[int, int]:
    """The input size (height, width) of the engine ``open_engine`` gives, read from the
    engine folder's manifest (its engine file is checked where it is opened, not hashed
    here too) or the checkpoint, without loading the engine."""
    if spec.engine_dir is not None:
        height, width = read_manifest(spec.engine_dir, verify=False).input_size
        return height, width
    if spec.null_outputs is not None:
        return _null_size(spec)
    from psicbatch.checkpoint import load_checkpoint
    from psicbatch.engines.build import engine_size

    return engine_size(load_checkpoint(_checkpoint(spec), weights=False), spec.input_size)


def _null_size(spec: EngineSpec) -> tuple[int, int]:
    return spec.input_size or (512, 512)


def open_engine(spec: EngineSpec, device: str, max_batch: int = 64) -> Engine:
    """The engine of ``spec``, loaded on ``device`` (a checkpoint runs in place, as a torch
    engine, without building an engine folder)."""
    if spec.engine_dir is not None:
        return load_engine(spec.engine_dir, device)
    if spec.null_outputs is not None:
        from psicbatch.engines.null_engine import NullEngine

        manifest = describe_engine(spec, device, max_batch)
        return NullEngine(manifest, torch.device(device), spec.null_outputs)
    from psicbatch.engines.torch_engine import TorchEngine

    manifest = describe_engine(spec, device, max_batch)
    checkpoint = _checkpoint(spec)
    return TorchEngine(checkpoint.parent, manifest, torch.device(device), checkpoint)


def _checkpoint(spec: EngineSpec) -> Path:
    if spec.checkpoint is None:
        raise PsicbatchError("give an engine folder (--engine) or a checkpoint (--model)")
    return spec.checkpoint
