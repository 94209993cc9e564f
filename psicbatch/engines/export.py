"""Steps every backend shares: the probability-output model, ONNX export, int8 QDQ quantization
and the images used for calibration and parity checks."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from psicbatch.checkpoint import Checkpoint
from psicbatch.data.images import image_files, read_image
from psicbatch.data.synth import synth_image
from psicbatch.engines.manifest import INPUT_NAME, OUTPUT_NAMES
from psicbatch.errors import PsicbatchError
from psicbatch.model import PSICNet
from psicbatch.preprocess import normalize, resize_image

ONNX_OPSET = 18


class ProbabilityModel(nn.Module):
    """PSIC-Net with sigmoid outputs: what every engine computes.

    ``dtype`` runs the network in half precision for graphs whose precision must come from
    the graph itself (strongly typed TensorRT); inputs and outputs stay float32.
    """

    def __init__(self, model: PSICNet, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model = model.to(dtype).eval()
        self.dtype = dtype

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seg_logits, cls_logits = self.model(image.to(self.dtype))
        return torch.sigmoid(cls_logits.float()).squeeze(1), torch.sigmoid(seg_logits.float())


def export_onnx(
    checkpoint: Checkpoint,
    path: Path,
    input_size: tuple[int, int],
    max_batch: int,
    dynamic_size: bool,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """One self-contained ONNX file with dynamic batch (and size, in multiples of 8)."""
    from torch.export import Dim

    onnx = require_onnx()

    model = ProbabilityModel(checkpoint.build_model(), dtype)
    channels = checkpoint.model_config.in_channels
    example = torch.zeros(min(2, max_batch), channels, *input_size)
    axes: dict[int, object] = {0: Dim("batch", min=1, max=max(2, max_batch))}
    if dynamic_size:
        axes[2] = 8 * Dim("height_8", min=1, max=1024)
        axes[3] = 8 * Dim("width_8", min=1, max=1024)
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"image": axes},
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
    return path


def require_onnx() -> object:
    """The onnx module, or a clear message naming the extra to install."""
    try:
        import onnx
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise PsicbatchError(
            f"ONNX export needs the 'onnx' extra ({error.name} is missing): "
            "pip install 'psicbatch[onnx]'"
        ) from None
    return onnx


def quantize_int8(onnx_path: Path, out_path: Path, calibration: np.ndarray) -> Path:
    """Static int8 quantization in QDQ form (symmetric, per-channel weights).

    QDQ graphs run in ONNX Runtime and are TensorRT's explicit-quantization format, so
    both int8 backends share this one step.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{INPUT_NAME: image[None]} for image in calibration])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    prepared = out_path.with_name(out_path.stem + ".prep.onnx")
    try:
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=_output_layers(prepared),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
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


def load_calibration_images(
    folder: Path, checkpoint: Checkpoint, size: tuple[int, int], limit: int = 64
) -> np.ndarray:
    """Up to ``limit`` images from ``folder`` (recursive), preprocessed as the checkpoint says."""
    if not folder.is_dir():
        raise PsicbatchError(f"{folder}: calibration folder not found")
    paths = image_files(folder)
    step = max(1, len(paths) // limit)  # spread the sample over the whole folder
    channels = checkpoint.model_config.in_channels
    images = [resize_image(read_image(p, channels), size) for p in paths[::step][:limit]]
    return _normalized(np.stack(images), checkpoint)


def synthetic_parity_images(checkpoint: Checkpoint, size: tuple[int, int], count: int = 8):
    """Textured images, half with defects, for parity checks when no images are given."""
    rng = np.random.default_rng(0)
    channels = checkpoint.model_config.in_channels
    images = [synth_image(rng, *size, defective=i % 2 == 0)[0] for i in range(count)]
    stacked = np.repeat(np.stack(images)[..., None], channels, axis=3)
    return _normalized(stacked, checkpoint)


def _normalized(images: np.ndarray, checkpoint: Checkpoint) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return normalize(tensor, checkpoint.preprocessing).numpy()


class _quiet_exporter:
    """The exporter logs progress lines at INFO/WARNING; a build prints its own summary."""

    def __enter__(self) -> None:
        self.loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export")]
        self.levels = [logger.level for logger in self.loggers]
        for logger in self.loggers:
            logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for logger, level in zip(self.loggers, self.levels, strict=True):
            logger.setLevel(level)
