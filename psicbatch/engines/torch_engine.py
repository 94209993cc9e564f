"""The torch backend: the checkpoint itself, run with autocast and channels_last.

On CPUs with AVX-512 BF16 this is the fastest option measured (bf16 + channels_last,
2.5x ONNX Runtime fp32, benchmarks/results/cpu-backends/); it also runs on CUDA.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psicbatch.checkpoint import Checkpoint, load_checkpoint
from psicbatch.engines.base import Engine
from psicbatch.engines.export import ProbabilityModel
from psicbatch.engines.manifest import Manifest
from psicbatch.predict import autocast

ENGINE_FILE = "model.pt"


def build_torch(checkpoint_path: Path, directory: Path, compile_model: bool) -> dict[str, Any]:
    """The engine file is a byte copy of the checkpoint (loaded with weights_only)."""
    shutil.copyfile(checkpoint_path, directory / ENGINE_FILE)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"engine_file": ENGINE_FILE, "details": {"device": device, "compile": compile_model}}


class TorchEngine(Engine):
    def __init__(self, directory: Path, manifest: Manifest) -> None:
        super().__init__(directory, manifest)
        checkpoint: Checkpoint = load_checkpoint(directory / manifest.engine_file)
        self.device = torch.device(manifest.backend_details.get("device", "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            self.device = torch.device("cpu")
        model = ProbabilityModel(checkpoint.build_model()).to(self.device)
        self.model = model.to(memory_format=torch.channels_last)
        if manifest.backend_details.get("compile"):
            self.model = torch.compile(self.model)

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = torch.from_numpy(images).to(self.device, non_blocking=True)
        batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.manifest.precision):
            probabilities, segmentation = self.model(batch)
        return probabilities.float().cpu().numpy(), segmentation.float().cpu().numpy()
