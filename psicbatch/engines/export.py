"""The probability-output model every engine computes, and its ONNX export."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from psicbatch.checkpoint import Checkpoint
from psicbatch.engines.manifest import INPUT_NAME, OUTPUT_NAMES
from psicbatch.errors import PsicbatchError
from psicbatch.model import PSICNet
from psicbatch.network_size import STRIDE

ONNX_OPSET = 18
MAX_EXPORTED_BATCH = 65536  # the range torch.export reasons over; ONNX keeps the batch free


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


_last_export: dict[str, Any] = {}  # "key" and "graph" (bytes) of the last export


def export_onnx(
    checkpoint: Checkpoint,
    path: Path,
    input_size: tuple[int, int],
    dynamic_size: bool,
    dtype: torch.dtype = torch.float32,
    checkpoint_sha256: str | None = None,
) -> Path:
    """One self-contained ONNX file with dynamic batch (and size, in multiples of 8).

    The batch has no bound of its own in the graph, so engines of any largest batch share
    it. With ``checkpoint_sha256`` the last graph this process exported is reused when the
    same checkpoint and size come again: the export is the slow part of an ONNX-based
    build (about 13 s on a 2-core AVX2 CPU, for the demo model and the paper's network
    alike: tracing, not the weights, takes the time), and a tuned build turns the same
    graph into up to four candidates."""
    key = (checkpoint_sha256, tuple(input_size), dynamic_size, dtype)
    if checkpoint_sha256 is not None and _last_export.get("key") == key:
        path.write_bytes(_last_export["graph"])
        return path
    _export(checkpoint, path, input_size, dynamic_size, dtype)
    if checkpoint_sha256 is not None:
        _last_export.update(key=key, graph=path.read_bytes())
    return path


def _export(
    checkpoint: Checkpoint,
    path: Path,
    input_size: tuple[int, int],
    dynamic_size: bool,
    dtype: torch.dtype,
) -> None:
    from torch.export import Dim

    onnx = require_onnx()

    model = ProbabilityModel(checkpoint.build_model(), dtype)
    channels = checkpoint.model_config.in_channels
    # Batch 2, not 1: torch.export fixes a dimension its example gives as 1.
    example = torch.zeros(2, channels, *input_size)
    axes: dict[int, object] = {0: Dim("batch", min=1, max=MAX_EXPORTED_BATCH)}
    if dynamic_size:
        axes[2] = STRIDE * Dim("height_in_strides", min=1, max=1024)
        axes[3] = STRIDE * Dim("width_in_strides", min=1, max=1024)
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


def require_onnx() -> Any:
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
