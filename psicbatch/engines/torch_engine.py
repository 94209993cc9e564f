"""The torch backend: the checkpoint itself, run with autocast.

On CPUs with AVX-512 BF16 this is the fastest option measured (bf16 + channels_last,
2.5x ONNX Runtime fp32, benchmarks/results/cpu-backends/); it also runs on CUDA, where
it is the GPU engine that can be verified without TensorRT. The engine runs on the
device it is opened on, not the one it was built on. BatchNorm is folded into the
convolutions when the engine opens (one pass less over every activation map).

Memory layout: channels_last for bf16/fp16 and on GPUs; the default (contiguous) layout
for fp32 on CPUs, where channels_last measured 1.4-1.5x slower (the paper's network at
1408x512 on an AVX2 CPU, benchmarks/results/cpu-paper-sizes-avx2/memory-layout.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from psicbatch.checkpoint import Checkpoint, load_checkpoint
from psicbatch.engines.base import Engine
from psicbatch.engines.export import ProbabilityModel
from psicbatch.engines.folding import fold_batchnorm
from psicbatch.engines.manifest import Manifest
from psicbatch.precision import autocast

ENGINE_FILE = "model.pt"


def build_torch(checkpoint_path: Path, directory: Path, compile_model: bool) -> dict[str, Any]:
    """The engine file is a byte copy of the checkpoint (loaded with weights_only)."""
    shutil.copyfile(checkpoint_path, directory / ENGINE_FILE)
    return {"engine_file": ENGINE_FILE, "details": {"compile": compile_model}}


class TorchEngine(Engine):
    def __init__(
        self, directory: Path, manifest: Manifest, device: torch.device, engine_file: Path
    ) -> None:
        super().__init__(directory, manifest, device)
        checkpoint: Checkpoint = load_checkpoint(engine_file)
        model = fold_batchnorm(ProbabilityModel(checkpoint.build_model())).to(device)
        cpu_fp32 = device.type == "cpu" and manifest.precision == "fp32"
        self.memory_format = torch.contiguous_format if cpu_fp32 else torch.channels_last
        # Module.to takes memory_format at run time; torch's type stubs omit it.
        self.model = model.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        if device.type == "cuda":
            # Batch and size are fixed within a run: let cuDNN pick the fastest kernels once.
            torch.backends.cudnn.benchmark = True
        if manifest.backend_details.get("compile"):
            self.model = torch.compile(self.model)

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = images.contiguous(memory_format=self.memory_format)
        with torch.inference_mode(), autocast(self.device, self.manifest.precision):
            probabilities, segmentation = self.model(batch)
        return probabilities.float(), segmentation.float()
