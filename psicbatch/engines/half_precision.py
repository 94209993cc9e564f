"""A quantized (Q/DQ) ONNX graph with its float parts in fp16, its inputs and outputs fp32.

TensorRT 11 builds strongly typed networks: there are no builder flags left to let the
layers outside the Q/DQ pairs run in fp16, so the graph must say so itself. The int8
quantizer works on fp32 graphs; this turns the result's float tensors (weights kept in
float, Q/DQ scales, constants, casts) into fp16 and casts at the graph's edges, so the
engine takes and gives float32 like every other. Q/DQ with fp16 scales needs opset 19.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

QDQ_HALF_OPSET = 19


def float16_outside_qdq(onnx_path: Path, out_path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph

    def half(tensor: onnx.TensorProto) -> onnx.TensorProto:
        values = numpy_helper.to_array(tensor).astype(np.float16)
        return numpy_helper.from_array(values, tensor.name)

    for initializer in graph.initializer:
        if initializer.data_type == TensorProto.FLOAT:
            initializer.CopyFrom(half(initializer))
    for node in graph.node:
        for attribute in node.attribute:
            if (
                node.op_type == "Cast"
                and attribute.name == "to"
                and attribute.i == TensorProto.FLOAT
            ):
                attribute.i = TensorProto.FLOAT16
            if attribute.HasField("t") and attribute.t.data_type == TensorProto.FLOAT:
                attribute.t.CopyFrom(half(attribute.t))
    # The edges: fp32 in, cast to fp16; fp16 results cast back to the fp32 outputs.
    inputs = {value.name for value in graph.input}
    outputs = {value.name for value in graph.output}
    for node in graph.node:
        node.input[:] = [f"{name}_half" if name in inputs else name for name in node.input]
        node.output[:] = [f"{name}_half" if name in outputs else name for name in node.output]
    to_half = [
        helper.make_node("Cast", [name], [f"{name}_half"], to=TensorProto.FLOAT16)
        for name in sorted(inputs)
    ]
    to_float = [
        helper.make_node("Cast", [f"{name}_half"], [name], to=TensorProto.FLOAT)
        for name in sorted(outputs)
    ]
    nodes = [*to_half, *graph.node, *to_float]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # intermediate types changed: inferred again below
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, QDQ_HALF_OPSET)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out_path))
    return out_path
