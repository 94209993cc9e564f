"""The ONNX Runtime backend: fp32, or int8 QDQ; CPU here, the CUDA provider where installed.

Inputs and outputs are bound to torch tensors on the engine's device (ONNX Runtime's I/O
binding): the engine reads the batch where it is and writes into tensors allocated there,
so on the CUDA provider nothing makes a round trip through the host, and on the CPU the
same calls skip numpy's copies. Tensors arrive and leave on the engine's device like every
other engine's. Torch's stream is waited for before a call and the outputs' before they
are returned (ONNX Runtime runs on a stream of its own).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psicbatch.engines.base import Engine
from psicbatch.engines.manifest import INPUT_NAME, OUTPUT_NAMES, Manifest, inside_folder
from psicbatch.errors import PsicbatchError

ENGINE_FILE = "model.onnx"
CUDA_PROVIDER = "CUDAExecutionProvider"


def session_options(threads: int) -> Any:
    """``threads`` 0: as many as torch runs in this process, which psicbatch sizes to the
    CPUs it may use (a container's quota, a run's workers sharing them); ONNX Runtime's
    own default, one per physical core, knows neither."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def providers_for(device: torch.device, available: list[str]) -> list[Any]:
    """The CUDA provider on this engine's GPU (its ``device_id``), or the CPU provider.
    A GPU engine without the CUDA provider is refused: running on the CPU instead would
    be about 1 image/s at 1408x512 where the GPU gives hundreds."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if CUDA_PROVIDER not in available:
        raise PsicbatchError(
            f"the onnxruntime engine on {device} needs ONNX Runtime's CUDA provider, which "
            "the installed onnxruntime lacks (it is the CPU build): on GPU machines install "
            "'psicbatch[onnx-gpu]' instead of 'psicbatch[onnx]' (pip uninstall onnxruntime "
            "first: the two packages conflict), or run this engine with --device cpu"
        )
    return [(CUDA_PROVIDER, {"device_id": device.index or 0}), "CPUExecutionProvider"]


def build_onnxruntime(onnx_path: Path, directory: Path, threads: int) -> dict[str, Any]:
    """Optimise the graph once and save the result as the engine file.

    Extended (not hardware-specific) optimisations are saved, so the file stays a portable
    ONNX model; the remaining ones are applied when a session opens it.
    """
    import onnxruntime as ort

    options = session_options(threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(directory / ENGINE_FILE)
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return {
        "engine_file": ENGINE_FILE,
        "details": {"threads": threads, "providers": ort.get_available_providers()},
    }


def check_external_data(model_path: Path, covered: dict[str, str]) -> None:
    """Refuse ONNX files whose weights live in files outside their engine folder, or in
    files whose sha256 the manifest does not hold (``covered``: its data_files)."""
    import onnx

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as error:  # a damaged file: protobuf's errors have no common type
        raise PsicbatchError(
            f"{model_path}: not a readable ONNX graph ({type(error).__name__}); rebuild "
            "with 'psicbatch build-engine'"
        ) from None
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        inside_folder(model_path.parent, location, model_path)
        if Path(location).as_posix() not in covered:
            raise PsicbatchError(
                f"{model_path}: its external data {location!r} is not covered by the "
                "manifest's sha256 digests; rebuild with 'psicbatch build-engine'"
            )


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor of a graph: initializers, and those in node attributes and subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


class OnnxRuntimeEngine(Engine):
    def __init__(
        self, directory: Path, manifest: Manifest, device: torch.device, engine_file: Path
    ) -> None:
        super().__init__(directory, manifest, device)
        import onnxruntime as ort

        check_external_data(engine_file, manifest.data_files)
        threads = int(manifest.backend_details.get("threads", 0))
        self.providers = providers_for(device, ort.get_available_providers())
        self.session = ort.InferenceSession(
            str(engine_file), session_options(threads), providers=self.providers
        )

    @property
    def pads_batches(self) -> bool:
        return self.device.type == "cuda"  # the CUDA provider's cuDNN searches per shape

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.contiguous()
        batch, _, height, width = images.shape
        outputs = (
            torch.empty((batch,), dtype=torch.float32, device=self.device),
            torch.empty((batch, 1, height, width), dtype=torch.float32, device=self.device),
        )
        binding = self.session.io_binding()
        where = (self.device.type, self.device.index or 0)
        binding.bind_input(INPUT_NAME, *where, np.float32, list(images.shape), images.data_ptr())
        for name, tensor in zip(OUTPUT_NAMES, outputs, strict=True):
            binding.bind_output(name, *where, np.float32, list(tensor.shape), tensor.data_ptr())
        if self.device.type == "cuda":  # the batch was written on torch's stream
            torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return outputs
