"""Opening engine folders: the manifest is checked first, then the backend that built the
engine is imported and opens it on the device asked for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from psicbatch.devices import default_device
from psicbatch.engines.base import Engine
from psicbatch.engines.manifest import Manifest, read_manifest
from psicbatch.engines.registry import backend as registered_backend
from psicbatch.errors import PsicbatchError, error_line

EngineClass = Callable[[Path, Manifest, torch.device, Path], Engine]


def engine_class(backend: str, where: object) -> EngineClass:
    entry = registered_backend(backend, where)
    return entry.load(entry.engine_class)


def load_engine(directory: Path, device: str | None = None) -> Engine:
    """Open an engine folder, after checking its manifest and the engine file's sha256, on
    ``device`` (default: the first GPU when one is visible, else the CPU)."""
    manifest = read_manifest(directory)
    cls = engine_class(manifest.backend, directory)
    engine_file = directory / manifest.engine_file
    try:
        return cls(directory, manifest, torch.device(device or default_device()), engine_file)
    except (PsicbatchError, ImportError):
        raise
    except Exception as error:  # the runtime refused the file: damaged or not an engine
        raise PsicbatchError(
            f"{engine_file}: the {manifest.backend} runtime cannot load it "
            f"({error_line(error)}); rebuild with 'psicbatch build-engine'"
        ) from None
