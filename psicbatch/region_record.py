"""The region of interest that decisions were calibrated inside, found again by its hash.

An area rule counts defect pixels; chosen on masks counted inside a region, it holds for
masks counted inside that region only. So decisions record the region (its file, sha256
and size), and a run applies that same region: the file given with ``--roi`` must be it,
and without ``--roi`` the recorded file is used if it is still there, unchanged. An
engine folder keeps a copy of its decisions' region beside its manifest, so a folder
copied to a line PC carries it. Nothing here imports torch: the command line reads it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from psicbatch.errors import PsicbatchError
from psicbatch.paths import file_sha256, readable_path


def short(record: dict[str, Any]) -> str:
    """``roi.png (sha256 1a7c1b5dea22)``, for messages."""
    return f"{record['file']} (sha256 {str(record['sha256'])[:12]})"


def matches(path: Path, record: dict[str, Any]) -> bool:
    """Whether ``path`` is a regular file holding the recorded region's bytes (one that
    cannot be read is not)."""
    try:
        return os.path.isfile(path) and file_sha256(path) == record["sha256"]
    except OSError:
        return False


def recorded_file(record: dict[str, Any], base: Path | None = None) -> Path | None:
    """The recorded region's file (relative names below ``base``, an engine folder), when
    it is still there unchanged."""
    path = Path(record["file"])
    if base is not None and not path.is_absolute():
        path = base / path
    return path if matches(path, record) else None


def applied_region(
    record: dict[str, Any] | None, given: Path | None, base: Path | None, where: str
) -> Path | None:
    """The region a run applies: ``given`` (``--roi``), which must be the recorded one;
    else the recorded one; a one-line error when decisions name a region that cannot be
    found. ``where`` names the decisions in messages."""
    if record is None:
        return given
    if given is not None:
        if not matches(given, record):
            raise PsicbatchError(
                f"{readable_path(given)}: not the region of interest the decisions of "
                f"{where} were calibrated inside ({short(record)}); give that region, or "
                "calibrate on predictions scored inside this one"
            )
        return given
    found = recorded_file(record, base)
    if found is None:
        raise PsicbatchError(
            f"{where}: calibrated inside the region of interest {short(record)}, which is "
            "no longer there unchanged; give that region with --roi"
        )
    return found
