"""The ONNX Runtime backend: fp32, or int8 QDQ; CPU here, the CUDA provider where installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from psicbatch.engines.base import Engine
from psicbatch.engines.manifest import INPUT_NAME, Manifest

ENGINE_FILE = "model.onnx"


def _session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: one per physical core
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def build_onnxruntime(onnx_path: Path, directory: Path, threads: int) -> dict[str, Any]:
    """Optimise the graph once and save the result as the engine file.

    Extended (not hardware-specific) optimisations are saved, so the file stays a portable
    ONNX model; the remaining ones are applied when a session opens it.
    """
    import onnxruntime as ort

    options = _session_options(threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(directory / ENGINE_FILE)
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return {
        "engine_file": ENGINE_FILE,
        "details": {"threads": threads, "providers": _providers()},
    }


class OnnxRuntimeEngine(Engine):
    def __init__(self, directory: Path, manifest: Manifest) -> None:
        super().__init__(directory, manifest)
        import onnxruntime as ort

        threads = int(manifest.backend_details.get("threads", 0))
        self.session = ort.InferenceSession(
            str(directory / manifest.engine_file), _session_options(threads), providers=_providers()
        )

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, segmentation = self.session.run(None, {INPUT_NAME: images})
        return probabilities, segmentation
