"""int8 quantization of an exported ONNX graph, shared by the CPU int8 runtimes (OpenVINO,
ONNX Runtime) and TensorRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from psicbatch.engines.manifest import INPUT_NAME
from psicbatch.errors import PsicbatchError

ACTIVATIONS = ("u8", "s8")


def quantize_int8(
    onnx_path: Path,
    out_path: Path,
    calibration: np.ndarray | None,
    activations: str = "u8",
    operator_form: bool = False,
) -> Path:
    """Static int8 quantization in QDQ form, per-channel symmetric int8 weights.

    ``u8``: unsigned, asymmetric activations, what x86 VNNI multiplies natively (u8 x s8)
    and a full 8 bits for the non-negative outputs of ReLU; the faster and closer choice
    for CPU runtimes (benchmarks/results/cpu-int8/). ``s8``: symmetric signed activations,
    the format TensorRT's explicit quantization requires; biases then stay float, since
    TensorRT's parser refuses a DequantizeLinear of int32 biases. ``operator_form`` writes
    QLinearConv-style operators instead of QDQ pairs (ONNX Runtime only; compared in the
    benchmark, slower there).
    """
    if calibration is None:
        raise PsicbatchError("int8 needs calibration images: --calib DIR")
    samples: np.ndarray = calibration
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")

    class Reader(CalibrationDataReader):
        """Images one at a time, over the range the calibrator asks for."""

        def __init__(self) -> None:
            self.set_range(0, len(samples))

        def __len__(self) -> int:
            return len(samples)

        def set_range(self, start_index: int, end_index: int) -> None:
            images = samples[start_index:end_index]
            self.batches = iter([{INPUT_NAME: image[None]} for image in images])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    unsigned = activations == "u8"
    prepared = out_path.with_name(out_path.stem + ".prep.onnx")
    try:
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QOperator if operator_form else QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8 if unsigned else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=_output_layers(prepared),
            extra_options={
                "ActivationSymmetric": not unsigned,
                "WeightSymmetric": True,
                # Ranges are merged every few images: the calibrator keeps every
                # activation of the images in between, gigabytes each at paper size.
                "CalibStridedMinMax": _stride(len(calibration)),
                "QuantizeBias": unsigned,  # s8 is TensorRT's form: float biases only
            },
        )
    finally:
        prepared.unlink(missing_ok=True)
    return out_path


def _output_layers(onnx_path: Path) -> list[str]:
    """Names of the nodes feeding the output sigmoids, kept in float precision.

    Pixel thresholds sit where the sigmoid saturates, so int8 error in the last layers
    moves mask borders noticeably; everything before them is quantized.
    """
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    producers = {output: node for node in graph.node for output in node.output}
    excluded = []
    for node in graph.node:
        if node.op_type == "Sigmoid":
            source = producers.get(node.input[0])
            while source is not None and source.op_type not in ("Conv", "Gemm", "MatMul"):
                source = producers.get(source.input[0]) if source.input else None
            if source is not None:
                excluded.append(source.name)
    return excluded


def _stride(count: int, most: int = 8) -> int:
    """The largest chunk of at most ``most`` images that divides ``count`` evenly (the
    calibrator's requirement)."""
    return next(size for size in range(min(most, count), 0, -1) if count % size == 0)
