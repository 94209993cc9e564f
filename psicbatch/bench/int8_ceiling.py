"""The int8 ceiling of a CPU int8 runtime: what its own quantized matrix product reaches.

torch's CPU int8 product is a slow reference kernel (1.3 GOP/s on an AVX2 CPU), not what
ONNX Runtime or OpenVINO run, so an int8 engine's share of ceiling is measured against the
runtime that runs it: one QDQ matrix product (uint8 activations, int8 weights, the pattern
of psicbatch's int8 engines) timed in that runtime.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from psicbatch.bench.stats import measure
from psicbatch.engines.ort_engine import session_options

INPUT = "x"


def qdq_matmul_graph(path: Path, size: int) -> Path:
    """x (float) -> quantize to uint8 -> dequantize -> matmul with dequantized int8 weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 127, (size, size), dtype=np.int8)
    initializers = [
        numpy_helper.from_array(weights, "w_q"),
        numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", [INPUT, "x_scale", "x_zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"]),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "int8_ceiling",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, path)
    return path


def _runner(backend: str, graph: Path, threads: int) -> Callable[[np.ndarray], object]:
    if backend == "openvino":
        from psicbatch.engines.openvino_engine import compile_settings, import_openvino

        compiled = (
            import_openvino().Core().compile_model(str(graph), "CPU", compile_settings(threads))
        )
        request = compiled.create_infer_request()
        return lambda x: request.infer({0: x}, share_inputs=True)
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(graph), session_options(threads), providers=["CPUExecutionProvider"]
    )
    return lambda x: session.run(None, {INPUT: x})


def int8_ceiling(
    backend: str, threads: int = 0, size: int = 2048, seconds: float = 6.0
) -> dict[str, float | str]:
    """GOP/s of ``backend``'s (onnxruntime or openvino) int8 matrix product."""
    with tempfile.TemporaryDirectory() as folder:
        run = _runner(backend, qdq_matmul_graph(Path(folder) / "matmul.onnx", size), threads)
        x = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)

        def call() -> None:
            run(x)

        result = measure(call, 1, warmup_calls=2, window_seconds=seconds / 4, max_seconds=seconds)
    return {
        "precision": f"int8 ({backend})",
        "size": size,
        "gflops": 2 * size**3 * result.throughput / 1e9,
        "stable": result.stable,
    }
