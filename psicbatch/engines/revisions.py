"""Decisions stored with an engine: each change writes a new manifest revision.

The engine file and its sha256 stay as they are (a revision changes what run decides, not
what the engine computes); the manifest being replaced is kept as ``manifest.rN.json``,
so every earlier revision stays readable, and who set the decisions, when and on what
data is part of each revision.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from psicbatch.decisions import Decisions
from psicbatch.engines.manifest import MANIFEST_NAME, Manifest, read_manifest

REVISION_NAME = re.compile(r"manifest\.r\d+\.json")  # what revision_path names


def revision_path(directory: Path, revision: int) -> Path:
    return directory / f"manifest.r{revision}.json"


def is_revision(name: str) -> bool:
    """A kept earlier manifest's file name (``revision_path``)."""
    return REVISION_NAME.fullmatch(name) is not None


def set_decisions(directory: Path, decisions: Decisions, source: Path) -> Manifest:
    """A new revision of ``directory``'s manifest holding ``decisions`` (from the decision
    file ``source``); the engine is verified first, so a damaged one is not revised."""
    manifest = read_manifest(directory, verify=True)
    kept = revision_path(directory, manifest.revision)
    if not kept.exists():
        shutil.copyfile(directory / MANIFEST_NAME, kept)
    manifest.decisions = {**decisions.to_dict(), "decision_file": str(source)}
    manifest.revision += 1
    manifest.write(directory)
    return manifest


def engine_decisions(directory: Path) -> tuple[Decisions, dict[str, Any]] | None:
    """The decisions an engine folder's manifest holds, and their record, if any."""
    manifest = read_manifest(directory, verify=False)
    if manifest.decisions is None:
        return None
    record = {"engine": str(directory), "manifest_revision": manifest.revision}
    return Decisions.from_dict(manifest.decisions, str(directory / MANIFEST_NAME)), {
        **record,
        **manifest.decisions,
    }
