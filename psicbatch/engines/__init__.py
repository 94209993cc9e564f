"""Compiled PSIC-Net engines behind one interface (see ``base.Engine``).

Backend modules are imported only when an engine of that kind is loaded, so TensorRT or
ONNX Runtime are never needed to use the others.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from psicbatch.engines.base import Engine
from psicbatch.engines.manifest import MANIFEST_NAME, Manifest, read_manifest
from psicbatch.errors import PsicbatchError

_ENGINE_CLASSES = {
    "torch": ("psicbatch.engines.torch_engine", "TorchEngine"),
    "onnxruntime": ("psicbatch.engines.ort_engine", "OnnxRuntimeEngine"),
    "tensorrt": ("psicbatch.engines.tensorrt_engine", "TensorRTEngine"),
}


def load_engine(directory: Path) -> Engine:
    """Open an engine folder after checking its manifest and the engine file's sha256."""
    manifest = read_manifest(directory)
    if manifest.backend not in _ENGINE_CLASSES:
        raise PsicbatchError(f"{directory}: unknown engine backend {manifest.backend!r}")
    module_name, class_name = _ENGINE_CLASSES[manifest.backend]
    return getattr(importlib.import_module(module_name), class_name)(directory, manifest)


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


__all__ = ["Engine", "Manifest", "list_engines", "load_engine", "read_manifest"]
