"""``manifest.json``: everything about an engine except the engine itself.

The engine file stays exactly what its runtime writes (a plain TensorRT ``.plan``, a plain
``.onnx``), so standard tools can load it; psicbatch's metadata lives in this sidecar.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psicbatch.checkpoint import file_sha256
from psicbatch.errors import PsicbatchError
from psicbatch.model import STRIDE
from psicbatch.preprocess import Preprocessing

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAMES = ("defect_probability", "segmentation")


@dataclass
class Manifest:
    backend: str
    precision: str
    engine_file: str
    engine_sha256: str
    channels: int
    input_size: tuple[int, int]  # the size images are resized to (H, W)
    min_size: tuple[int, int]
    max_size: tuple[int, int]
    min_batch: int
    max_batch: int
    checkpoint_sha256: str
    preprocessing: dict[str, Any]
    thresholds: dict[str, float]
    versions: dict[str, str]
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig: width, in_channels
    parity: dict[str, Any] = field(default_factory=dict)
    backend_details: dict[str, Any] = field(default_factory=dict)
    selection: str = ""  # why build-engine chose this backend and precision
    size_multiple: int = STRIDE
    schema_version: int = SCHEMA_VERSION
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.input_size = tuple(self.input_size)
        self.min_size = tuple(self.min_size)
        self.max_size = tuple(self.max_size)
        if not self.inputs:
            self.inputs = [
                {
                    "name": INPUT_NAME,
                    "dtype": "float32",
                    "shape": ["batch", self.channels, "height", "width"],
                }
            ]
        if not self.outputs:
            self.outputs = [
                {"name": OUTPUT_NAMES[0], "dtype": "float32", "shape": ["batch"]},
                {
                    "name": OUTPUT_NAMES[1],
                    "dtype": "float32",
                    "shape": ["batch", 1, "height", "width"],
                },
            ]

    def engine_preprocessing(self) -> Preprocessing:
        """The checkpoint's normalisation at this engine's input size: what decoders apply."""
        return Preprocessing.from_dict({**self.preprocessing, "input_size": self.input_size})

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        data = asdict(self)
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path


def inside_folder(directory: Path, name: str, named_in: Path) -> Path:
    """``directory / name``, refused unless it resolves inside ``directory``: an engine
    folder is self-contained, so its manifest cannot make psicbatch load another file."""
    target = (directory / name).resolve()
    if not target.is_relative_to(directory.resolve()):
        raise PsicbatchError(
            f"{named_in}: {name!r} points outside its engine folder {directory}; an engine "
            "folder must hold every file it uses"
        )
    return target


def read_manifest(directory: Path, verify: bool = True) -> Manifest:
    """Read and check a manifest; with ``verify``, also the engine file's sha256."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise PsicbatchError(f"{directory}: not an engine folder (no {MANIFEST_NAME})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PsicbatchError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PsicbatchError(
            f"{path}: engine manifest schema {version!r}, this psicbatch reads schema "
            f"{SCHEMA_VERSION}; rebuild with 'psicbatch build-engine'"
        )
    try:
        manifest = Manifest(**data)
    except TypeError as error:
        raise PsicbatchError(f"{path}: malformed manifest ({error})") from None
    if verify:
        engine = inside_folder(directory, manifest.engine_file, path)
        if not engine.is_file():
            raise PsicbatchError(f"{path}: engine file {manifest.engine_file} is missing")
        if file_sha256(engine) != manifest.engine_sha256:
            raise PsicbatchError(
                f"{engine}: does not match its manifest (sha256 differs); the file was "
                "replaced or damaged, rebuild with 'psicbatch build-engine'"
            )
    return manifest
