"""The ``model.pt`` checkpoint: weights plus everything needed to use them correctly.

A checkpoint is a plain dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``, so loading never runs code from the file::

    format            "psicbatch-checkpoint"
    format_version    int (FORMAT_VERSION); newer files are refused with a clear message
    psicbatch_version version that wrote the file
    model             ModelConfig as a dict (width, in_channels)
    preprocessing     Preprocessing as a dict (input_size, mean, std)
    thresholds        Thresholds as a dict (classification, segmentation)
    state_dict        the network's weights
    training          JSON-like metadata (dataset, mode, epochs, seed, metrics ...)

Keeping preprocessing and thresholds next to the weights means an engine or a batch run
can never drift from the way the model was trained.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from psicbatch import __version__
from psicbatch.atomic import write_atomically
from psicbatch.checkpoint_file import check_checkpoint_file
from psicbatch.errors import CheckpointError
from psicbatch.model import ModelConfig, PSICNet
from psicbatch.paths import read_in_time
from psicbatch.preprocess import Preprocessing

FORMAT = "psicbatch-checkpoint"
FORMAT_VERSION = 1
_REQUIRED_KEYS = ("model", "preprocessing", "thresholds", "state_dict")


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds on probabilities: image-level defect, and mask pixels."""

    classification: float = 0.5
    segmentation: float = 0.5


@dataclass
class Checkpoint:
    model_config: ModelConfig
    preprocessing: Preprocessing
    state_dict: dict[str, torch.Tensor]
    thresholds: Thresholds = field(default_factory=Thresholds)
    training: dict[str, Any] = field(default_factory=dict)
    psicbatch_version: str = __version__

    @classmethod
    def from_model(
        cls,
        model: PSICNet,
        preprocessing: Preprocessing,
        thresholds: Thresholds | None = None,
        training: dict[str, Any] | None = None,
    ) -> Checkpoint:
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return cls(model.config, preprocessing, state, thresholds or Thresholds(), training or {})

    def build_model(self) -> PSICNet:
        """A PSIC-Net with a copy of these weights, in eval mode, on the CPU.

        Its layers are made on the meta device and given the weights: initialising them
        first, only to overwrite them, took 0.4 s for the paper's network on a 2-core AVX2
        EPYC, at every engine's opening."""
        with torch.device("meta"):
            model = PSICNet(self.model_config)
        kinds = model.state_dict()
        weights = {
            name: tensor.to(kinds[name].dtype, copy=True) if name in kinds else tensor
            for name, tensor in self.state_dict.items()
        }
        model.load_state_dict(weights, assign=True)
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "psicbatch_version": self.psicbatch_version,
            "model": self.model_config.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "thresholds": asdict(self.thresholds),
            "state_dict": self.state_dict,
            "training": self.training,
        }


def untrained_checkpoint(
    config: ModelConfig, input_size: tuple[int, int] = (512, 512), seed: int = 0
) -> Checkpoint:
    """Randomly initialised weights, to measure cost or build engines before training."""
    torch.manual_seed(seed)
    channels = config.in_channels
    preprocessing = Preprocessing(input_size, mean=(0.5,) * channels, std=(0.25,) * channels)
    return Checkpoint.from_model(
        PSICNet(config), preprocessing, training={"mode": "untrained", "seed": seed}
    )


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write atomically (temporary file, then rename) so a crash never leaves half a file;
    a failed write is a one-line CheckpointError with the OS's reason. The archive is made
    in memory first: torch's own file writer reports a full disk only as ``unexpected pos
    N vs M``."""
    path = Path(path)
    archive = io.BytesIO()
    torch.save(checkpoint.to_dict(), archive)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda temporary: temporary.write_bytes(archive.getbuffer()))
    except OSError as error:
        raise CheckpointError(path, f"cannot be written ({error.strerror or error})") from None
    return path


def load_checkpoint(path: str | os.PathLike, weights: bool = True) -> Checkpoint:
    """Read and validate a checkpoint; every way it can be wrong is a one-line CheckpointError.

    ``weights=False`` maps the weights into memory instead of reading them, for what needs
    only the configuration and the weights' shapes (a manifest, the input size): for the
    paper's network (128 MB) a quarter of the time, 0.03 s against 0.12 s on a 2-core
    AVX2 EPYC. Its weights are for shapes only: the file is read when they are used."""
    path = Path(path)
    # Within the read limit: a share that stopped answering would hold the reading for ever.
    data = read_in_time(path, partial(_load_plain_data, path, mmap=not weights))
    _check_header(path, data)
    try:
        model_config = ModelConfig(**data["model"])
        preprocessing = Preprocessing.from_dict(data["preprocessing"])
        thresholds = Thresholds(**data["thresholds"])
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(path, f"invalid configuration in checkpoint ({error})") from None
    if len(preprocessing.mean) != model_config.in_channels:
        raise CheckpointError(
            path,
            f"preprocessing has {len(preprocessing.mean)} channel(s) but the model "
            f"expects {model_config.in_channels}",
        )
    _check_weights(path, model_config, data["state_dict"])
    return Checkpoint(
        model_config=model_config,
        preprocessing=preprocessing,
        state_dict=data["state_dict"],
        thresholds=thresholds,
        training=data.get("training") or {},
        psicbatch_version=str(data.get("psicbatch_version", "unknown")),
    )


def is_checkpoint(path: Path) -> bool:
    """A file written by ``psicbatch train`` or ``init`` (read as plain data only, its
    tensors memory-mapped rather than loaded)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # damaged, unreadable, pickled code: not a checkpoint to replace
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def _load_plain_data(path: Path, mmap: bool) -> Any:
    check_checkpoint_file(path)
    try:
        mmap = mmap and _records_stored(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        reason = _offending_global(str(error))
        raise CheckpointError(
            path,
            "refused: the file contains pickled Python objects beyond plain tensors and "
            f"containers, which could run code when loaded ({reason})",
        ) from None
    except Exception as error:  # a damaged archive can fail in many ways inside torch
        raise CheckpointError(path, f"damaged PyTorch file ({_first_line(str(error))})") from None


def _records_stored(path: Path) -> bool:
    """Whether every record of the archive is stored as it is, as ``torch.save`` writes
    them: torch maps compressed ones too (an archive zipped again), as garbage weights."""
    with zipfile.ZipFile(path) as archive:
        return all(record.compress_type == zipfile.ZIP_STORED for record in archive.infolist())


def _check_header(path: Path, data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        if (
            isinstance(data, dict)
            and data
            and all(isinstance(v, torch.Tensor) for v in data.values())
        ):
            what = "a bare state_dict"
        else:
            what = f"a {type(data).__name__}"
        raise CheckpointError(
            path,
            f"not a psicbatch checkpoint (found {what}); expected a file written by "
            "'psicbatch train' or 'psicbatch init'",
        )
    version = data.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(path, f"invalid checkpoint format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"checkpoint format version {version} is newer than this psicbatch "
            f"{__version__} supports (up to {FORMAT_VERSION}); upgrade psicbatch",
        )
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise CheckpointError(path, f"checkpoint is missing {', '.join(missing)}")


def _check_weights(path: Path, config: ModelConfig, state_dict: Any) -> None:
    """Compare names and shapes with the configured network (built on the meta device: free)."""
    if not isinstance(state_dict, dict):
        raise CheckpointError(path, "state_dict is not a dict of tensors")
    with torch.device("meta"):
        expected = PSICNet(config).state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            path,
            f"weights do not match a PSIC-Net of width {config.width}: "
            f"{len(missing)} missing (e.g. {missing[:1]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:1]})",
        )
    for name, tensor in expected.items():
        found = state_dict[name]
        if not isinstance(found, torch.Tensor) or found.shape != tensor.shape:
            shape = tuple(found.shape) if isinstance(found, torch.Tensor) else type(found).__name__
            raise CheckpointError(
                path, f"weight {name} has shape {shape}, expected {tuple(tensor.shape)}"
            )


def _offending_global(message: str) -> str:
    """Pick torch's line naming the blocked object out of its long multi-paragraph message."""
    for line in message.splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip().rstrip(".")
    return "unsupported object"


# torch's request for reports, which some of its messages end with: not the user's to act on
TORCH_REPORT_REQUEST = "(Could this error message be improved?"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0].split(TORCH_REPORT_REQUEST)[0].strip() if lines else "unknown error"
