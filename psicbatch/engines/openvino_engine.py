"""The OpenVINO backend: int8 on CPUs, the fastest CPU option measured (2.3-3x torch bf16
at the paper's sizes on AVX-512 VNNI, benchmarks/results/cpu-int8/).

The engine file is the quantized QDQ ONNX graph itself: OpenVINO reads it directly, so the
file stays portable and ONNX Runtime can open the same graph. Like ONNX Runtime, OpenVINO
works on numpy arrays; tensors are converted at this engine's edge.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from psicbatch.engines import registry
from psicbatch.engines.base import Engine
from psicbatch.engines.manifest import Manifest
from psicbatch.errors import PsicbatchError

ENGINE_FILE = "model.onnx"


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        hint = registry.backend("openvino").install_hint
        raise PsicbatchError(f"the openvino backend needs OpenVINO: {hint}") from None
    return openvino


def build_openvino(onnx_path: Path, directory: Path, threads: int) -> dict[str, Any]:
    """Copy the graph in; the build's parity check then compiles and runs it, so a graph
    OpenVINO cannot run fails the build rather than the first run."""
    import_openvino()
    shutil.copyfile(onnx_path, directory / ENGINE_FILE)
    return {"engine_file": ENGINE_FILE, "details": {"threads": threads, "device": "cpu"}}


def compile_settings(threads: int) -> dict[str, Any]:
    """Latency mode (one request at a time, every thread on it: batches arrive one by one
    from the run's inference stage) and float32 for the layers left unquantized, the
    output head among them; OpenVINO would otherwise run those in bf16 where the CPU has it."""
    return {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
    }


class OpenVinoEngine(Engine):
    def __init__(
        self, directory: Path, manifest: Manifest, device: torch.device, engine_file: Path
    ) -> None:
        super().__init__(directory, manifest, device)
        openvino = import_openvino()
        threads = int(manifest.backend_details.get("threads", 0))
        compiled = openvino.Core().compile_model(str(engine_file), "CPU", compile_settings(threads))
        self.request = compiled.create_infer_request()

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.request.infer({0: images.cpu().numpy()}, share_inputs=True)
        probabilities, segmentation = (torch.from_numpy(outputs[i]) for i in range(2))
        return probabilities.to(self.device), segmentation.to(self.device)
