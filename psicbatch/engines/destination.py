"""Where an engine may be built: its folder replaces nothing but an earlier engine.

A build ends by putting its folder in place of ``--out`` (or the default folder). That
place may be new or an empty folder, or an earlier engine folder holding nothing but its
own files (the manifest and its revisions, the engine file, the data files the manifest
lists), and that only with ``--overwrite``: an engine folder also keeps the decisions set
for a line, which a rebuild loses. Anything else is refused in one line, before any work
and again just before the replacement.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from psicbatch.engines.manifest import MANIFEST_NAME
from psicbatch.engines.revisions import is_revision
from psicbatch.errors import PsicbatchError
from psicbatch.paths import readable_path
from psicbatch.run.output_guard import check_writable, folder_entries


def check_destination(directory: Path, overwrite: bool) -> None:
    """Refuse, in one line, to build into ``directory`` when that would replace anything
    but an earlier engine (and that without ``overwrite``)."""
    shown = readable_path(directory)
    entries = folder_entries(directory, "--out")
    check_writable(directory.parent, directory, "choose another --out")  # built, then renamed
    if not entries:
        return
    own = _engine_files(directory)
    if own is None:
        raise PsicbatchError(
            f"{shown}: holds files and is not an engine folder (no psicbatch {MANIFEST_NAME}); "
            "refusing to replace it (choose another --out)"
        )
    foreign = [name for name in entries if name not in own and not is_revision(name)]
    if foreign:
        raise PsicbatchError(
            f"{shown}: holds {foreign[0]}, which is not its engine's; refusing to replace "
            "the folder (choose another --out)"
        )
    if not overwrite:
        raise PsicbatchError(
            f"{shown}: holds an earlier engine; pass --overwrite to replace it (with the "
            "decisions set on it), or choose another --out"
        )


def move_into_place(built: Path, directory: Path, overwrite: bool) -> None:
    """Replace ``directory`` with the folder ``built``, checked once more: a file that
    appeared there during the build is not deleted."""
    check_destination(directory, overwrite)
    shutil.rmtree(directory, ignore_errors=True)
    built.rename(directory)


def _engine_files(directory: Path) -> set[str] | None:
    """The names an engine folder's manifest accounts for, of any schema version; None
    when it has no psicbatch manifest."""
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or "schema_version" not in manifest:
        return None
    engine_file, data_files = manifest.get("engine_file"), manifest.get("data_files") or {}
    if not isinstance(engine_file, str) or not isinstance(data_files, dict):
        return None
    return {MANIFEST_NAME, engine_file, *(Path(name).parts[0] for name in data_files)}
