"""``manifest.json``: everything about an engine except the engine itself.

The engine file stays exactly what its runtime writes (a plain TensorRT ``.plan``, a plain
``.onnx``), so standard tools can load it; psicbatch's metadata lives in this sidecar.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psicbatch.atomic import write_atomically
from psicbatch.errors import PsicbatchError
from psicbatch.network_size import STRIDE
from psicbatch.paths import file_sha256, read_in_time

if TYPE_CHECKING:  # preprocess imports torch; listing and reading manifests does not need it
    from psicbatch.preprocess import Preprocessing

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAMES = ("defect_probability", "segmentation")
# backend_details["large_kernels"] of a torch engine computing conv10 by FFT where it runs
FREQUENCY_DOMAIN = "frequency domain"


def large_kernel_note(backend_details: dict[str, Any]) -> str:
    """What a record adds to the engine's backend and precision when its large kernels
    ran in the frequency domain."""
    if backend_details.get("large_kernels") == FREQUENCY_DOMAIN:
        return ", large kernels in the frequency domain"
    return ""


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
    # sha256 of every other file the engine reads (ONNX external data, OpenVINO weights)
    data_files: dict[str, str] = field(default_factory=dict)
    tuning: list[dict[str, Any]] = field(default_factory=list)  # candidates timed, if any
    size_multiple: int = STRIDE
    schema_version: int = SCHEMA_VERSION
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    # Decisions set for this engine (psicbatch calibrate --engine), applied by run; each
    # change is a new revision, the earlier ones kept as manifest.rN.json beside it.
    decisions: dict[str, Any] | None = None
    revision: int = 1
    # The checkpoint's training images, as digests of their files (fingerprints.ImageSet):
    # evaluations count how many of their own images the model learnt from.
    training_images: str = ""
    # The held-out images that chose the model's kept epochs or thresholds, and what they
    # chose (fingerprints.chosen_on): evaluations count them too.
    chosen_on: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_size = _pair(self.input_size)  # JSON gives lists
        self.min_size = _pair(self.min_size)
        self.max_size = _pair(self.max_size)
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

    @property
    def built_for(self) -> str:
        """What the engine was built for: its GPU (TensorRT), else the device it names."""
        return str(
            self.backend_details.get("gpu_name") or self.backend_details.get("device", "cpu")
        )

    def engine_preprocessing(self) -> Preprocessing:
        """The checkpoint's normalisation at this engine's input size: what decoders apply."""
        from psicbatch.preprocess import Preprocessing

        return Preprocessing.from_dict({**self.preprocessing, "input_size": self.input_size})

    def write(self, directory: Path) -> Path:
        """Written whole under a temporary name, then renamed: never half a manifest."""
        path = directory / MANIFEST_NAME
        text = json.dumps(asdict(self), indent=2) + "\n"
        write_atomically(path, lambda temporary: temporary.write_text(text))
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
    if not directory.exists():
        raise PsicbatchError(f"{directory}: no such engine folder")
    if not path.is_file():
        raise PsicbatchError(f"{directory}: not an engine folder (no {MANIFEST_NAME})")
    try:
        data = json.loads(read_in_time(path, path.read_text))
    except json.JSONDecodeError as error:
        raise PsicbatchError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PsicbatchError(f"{path}: cannot be read ({error})") from None
    if not isinstance(data, dict):
        raise PsicbatchError(f"{path}: malformed manifest (a JSON object is expected)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PsicbatchError(
            f"{path}: engine manifest schema {version!r}, this psicbatch reads schema "
            f"{SCHEMA_VERSION}; rebuild with 'psicbatch build-engine'"
        )
    problem = _field_problem(data)
    if problem:
        raise PsicbatchError(f"{path}: malformed manifest ({problem})")
    try:
        manifest = Manifest(**data)
    except (TypeError, ValueError) as error:
        raise PsicbatchError(f"{path}: malformed manifest ({error})") from None
    if verify:
        for name, sha256 in {
            manifest.engine_file: manifest.engine_sha256,
            **manifest.data_files,
        }.items():
            _verify_file(directory, name, sha256, path)
    return manifest


def _verify_file(directory: Path, name: str, sha256: str, manifest_path: Path) -> None:
    target = inside_folder(directory, name, manifest_path)
    if not target.is_file():
        raise PsicbatchError(f"{manifest_path}: engine file {name} is missing")
    if file_sha256(target) != sha256:
        raise PsicbatchError(
            f"{target}: does not match its manifest (sha256 differs); the file was "
            "replaced or damaged, rebuild with 'psicbatch build-engine'"
        )


# Manifest field -> (check, what it must be): a wrong type or an impossible value is
# refused when the manifest is read, not deep inside a runtime.
def _is_size(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_thresholds(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and {"classification", "segmentation"} <= set(value)
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1
            for v in value.values()
        )
    )


def _is_digests(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


_FIELD_CHECKS = {
    "backend": (lambda v: isinstance(v, str), "a string"),
    "precision": (lambda v: isinstance(v, str), "a string"),
    "engine_file": (lambda v: isinstance(v, str) and v != "", "a file name"),
    "engine_sha256": (lambda v: isinstance(v, str), "a string"),
    "channels": (lambda v: v in (1, 3) and not isinstance(v, bool), "1 or 3"),
    "input_size": (_is_size, "[height, width] of positive integers"),
    "min_size": (_is_size, "[height, width] of positive integers"),
    "max_size": (_is_size, "[height, width] of positive integers"),
    "min_batch": (_is_count, "a positive integer"),
    "max_batch": (_is_count, "a positive integer"),
    "preprocessing": (lambda v: isinstance(v, dict), "an object"),
    "thresholds": (_is_thresholds, "classification and segmentation numbers in [0, 1]"),
    "versions": (lambda v: isinstance(v, dict), "an object"),
    "data_files": (_is_digests, "an object of file names and sha256 digests"),
}


def _pair(values: Any) -> tuple[int, int]:
    first, second = values
    return first, second


def _field_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with a manifest's fields, or None (NaN fails every range check)."""
    for name, (check, expected) in _FIELD_CHECKS.items():
        if name in data and not check(data[name]):
            return f"{name} must be {expected}, got {json.dumps(data[name])[:60]}"
    low, high = data.get("min_batch"), data.get("max_batch")
    if isinstance(low, int) and isinstance(high, int) and _is_count(low) and low > high:
        return "min_batch is above max_batch"
    return None


def list_engines(root: Path) -> list[tuple[Path, Manifest | str]]:
    """Every engine folder under ``root`` with its manifest, or why it cannot be read."""
    found: list[tuple[Path, Manifest | str]] = []
    for manifest_path in sorted(root.rglob(MANIFEST_NAME)):
        if any(part.startswith(".") for part in manifest_path.relative_to(root).parts):
            continue
        try:
            found.append((manifest_path.parent, read_manifest(manifest_path.parent)))
        except PsicbatchError as error:
            found.append((manifest_path.parent, str(error)))
    return found
