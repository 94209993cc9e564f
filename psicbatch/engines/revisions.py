"""Decisions stored with an engine: each change writes a new manifest revision.

The engine file and its sha256 stay as they are (a revision changes what run decides, not
what the engine computes); the manifest being replaced is kept as ``manifest.rN.json``,
so every earlier revision stays readable, and who set the decisions, when and on what
data is part of each revision. Decisions calibrated inside a region of interest keep a
copy of it in the folder, named by its hash (``roi-<sha256[:12]>.png``), so the folder
carries it wherever it is copied, and no revision's region replaces another's.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from psicbatch.atomic import write_atomically
from psicbatch.decisions import Decisions
from psicbatch.engines.manifest import MANIFEST_NAME, Manifest, read_manifest
from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path
from psicbatch.region_record import matching, short

# What revision_path names, and the regions revisions keep (region_name).
REVISION_NAME = re.compile(r"manifest\.r\d+\.json|roi-[0-9a-f]{12}\.[A-Za-z0-9]+")


def revision_path(directory: Path, revision: int) -> Path:
    return directory / f"manifest.r{revision}.json"


def is_revision(name: str) -> bool:
    """A kept earlier manifest's file name (``revision_path``), or a region of interest
    a revision's decisions name (``region_name``)."""
    return REVISION_NAME.fullmatch(name) is not None


def region_name(region: dict[str, Any]) -> str:
    """The name of a decisions' region in the engine folder: its hash, its file's suffix."""
    suffix = Path(region["file"]).suffix.lower()
    return f"roi-{str(region['sha256'])[:12]}{suffix if suffix[1:].isalnum() else '.img'}"


def set_decisions(directory: Path, decisions: Decisions, source: Path) -> Manifest:
    """A new revision of ``directory``'s manifest holding ``decisions`` (from the decision
    file ``source``), with a copy of their region of interest, whose recorded file must
    hold it; the engine is verified first, so a damaged one is not revised."""
    manifest = read_manifest(directory, verify=True)
    stored = decisions.to_dict()
    if decisions.roi is not None:
        stored["roi"] = {**decisions.roi, "file": _keep_region(directory, decisions.roi)}
    kept = revision_path(directory, manifest.revision)
    if not kept.exists():
        shutil.copyfile(directory / MANIFEST_NAME, kept)
    manifest.decisions = {**stored, "decision_file": str(source)}
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


def _keep_region(directory: Path, region: dict[str, Any]) -> str:
    """Copy the region into the engine folder, the bytes checked against its hash; its
    name there."""
    original = Path(region["file"])
    snapshot = matching(original, region)
    if snapshot is None:
        raise PsicbatchError(
            f"{readable_path(original)}: the region of interest the decisions were "
            f"calibrated inside ({short(region)}) is not there unchanged, so it cannot be "
            "stored with the engine; give it with --roi"
        )
    name = region_name(region)
    data = snapshot.data
    write_atomically(directory / name, lambda temporary: temporary.write_bytes(data))
    return name
