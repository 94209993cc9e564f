"""The int8 graph TensorRT 11 gets: Q/DQ pairs with fp16 outside them, fp32 at the edges.
TensorRT cannot run here; ONNX Runtime runs the same graph on the CPU (unfused, since its
fused int8 kernels take fp32 scales only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from psicbatch.assets import demo_model_path
from psicbatch.checkpoint import load_checkpoint
from psicbatch.data.synth import generate
from psicbatch.engines.export import export_onnx
from psicbatch.engines.half_precision import float16_outside_qdq
from psicbatch.engines.quantize import quantize_int8
from psicbatch.preprocess import Normalizer
from psicbatch.run.decode import PilDecoder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Twelve generated images, half with defects, normalised for the demo model."""
    preprocessing = load_checkpoint(demo_model_path()).preprocessing
    folder = tmp_path_factory.mktemp("generated")
    files = sorted(generate(folder, 12, preprocessing.input_size, defect_rate=0.5, seed=3))
    decoded = PilDecoder(preprocessing).decode(files)
    assert decoded.images is not None
    return Normalizer(preprocessing, "cpu")(decoded.images).numpy()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory, images: np.ndarray) -> list[Path]:
    """The fp32 graph, its int8 Q/DQ graph and that graph with fp16 outside the pairs."""
    folder = tmp_path_factory.mktemp("qdq")
    checkpoint = load_checkpoint(demo_model_path())
    fp32 = export_onnx(checkpoint, folder / "fp32.onnx", images.shape[2:], False)
    int8 = quantize_int8(fp32, folder / "int8.onnx", images[:8], "s8")
    return [fp32, int8, float16_outside_qdq(int8, folder / "int8-fp16.onnx")]


def outputs(path: Path, images: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})


def test_every_float_inside_is_fp16_and_the_edges_stay_fp32(graphs: list[Path]) -> None:
    int8, half = (onnx.load(str(path)) for path in graphs[1:])
    edges = [*half.graph.input, *half.graph.output]
    assert all(value.type.tensor_type.elem_type == TensorProto.FLOAT for value in edges)
    edge_names = {value.name for value in edges}
    inside = {
        v.type.tensor_type.elem_type for v in half.graph.value_info if v.name not in edge_names
    }
    assert TensorProto.FLOAT16 in inside and TensorProto.FLOAT not in inside
    assert TensorProto.FLOAT not in {tensor.data_type for tensor in half.graph.initializer}
    # The Q/DQ pairs are untouched in number; biases were left float for TensorRT.
    count = [sum(n.op_type.endswith("QuantizeLinear") for n in m.graph.node) for m in (int8, half)]
    assert count[0] == count[1] > 0
    assert TensorProto.INT32 not in {tensor.data_type for tensor in int8.graph.initializer}


def test_fp16_outside_the_pairs_keeps_the_int8_graphs_results(
    graphs: list[Path], images: np.ndarray
) -> None:
    held_out = images[8:]
    (p32, s32), (p8, s8), (p16, s16) = (outputs(path, held_out) for path in graphs)
    assert p16.dtype == s16.dtype == np.float32 and s16.shape == s8.shape == s32.shape
    assert np.abs(p16 - p8).max() < 0.02 and np.abs(s16 - s8).mean() < 2e-3
    assert ((p16 > 0.5) == (p32 > 0.5)).all()  # the decisions of the fp32 network
