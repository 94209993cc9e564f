"""The region of interest that decisions were calibrated inside, found again by its hash.

An area rule counts defect pixels; chosen on masks counted inside a region, it holds for
masks counted inside that region only. So decisions record the region (its file, sha256
and size), and a run applies that same region: the file given with ``--roi`` must be it,
and without ``--roi`` the recorded file is used if it is still there, unchanged. An
engine folder keeps a copy of its decisions' region beside its manifest, so a folder
copied to a line PC carries it. Nothing here imports torch: the command line reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psicbatch.errors import PsicbatchError
from psicbatch.paths import FileSnapshot, readable_path


def short(record: dict[str, Any]) -> str:
    """``roi.png (sha256 1a7c1b5dea22)``, for messages."""
    return f"{record['file']} (sha256 {str(record['sha256'])[:12]})"


def read_region(path: Path) -> FileSnapshot:
    """A region file's bytes, read once (``RegionOfInterest`` decodes them), or a one-line
    error naming the file."""
    try:
        return FileSnapshot.read(path)
    except OSError as error:
        raise unreadable_region(path, error.strerror or error) from None


def unreadable_region(path: Path, error: Exception | str) -> PsicbatchError:
    """The one line for a region file that cannot be read or decoded."""
    problem = f"not a readable region-of-interest image ({error})"
    return PsicbatchError(f"{readable_path(path)}: {problem}")


def matching(path: Path, record: dict[str, Any]) -> FileSnapshot | None:
    """The bytes of ``path`` when it is a regular file holding the recorded region (one
    that cannot be read does not: ``FileSnapshot.read`` refuses a pipe before reading)."""
    try:
        snapshot = FileSnapshot.read(path)
    except (OSError, PsicbatchError):
        return None
    return snapshot if snapshot.sha256 == record["sha256"] else None


def recorded_file(record: dict[str, Any], base: Path | None = None) -> FileSnapshot | None:
    """The recorded region's file (relative names below ``base``, an engine folder), when
    it is still there unchanged."""
    path = Path(record["file"])
    if base is not None and not path.is_absolute():
        path = base / path
    return matching(path, record)


def applied_region(
    record: dict[str, Any] | None, given: Path | None, base: Path | None, where: str
) -> FileSnapshot | None:
    """The region a run applies: ``given`` (``--roi``), which must be the recorded one;
    else the recorded one; a one-line error when decisions name a region that cannot be
    found. ``where`` names the decisions in messages."""
    if record is None:
        return read_region(given) if given is not None else None
    if given is not None:
        snapshot = matching(given, record)
        if snapshot is None:
            raise PsicbatchError(
                f"{readable_path(given)}: not the region of interest the decisions of "
                f"{where} were calibrated inside ({short(record)}); give that region, or "
                "calibrate on predictions scored inside this one"
            )
        return snapshot
    found = recorded_file(record, base)
    if found is None:
        raise PsicbatchError(
            f"{where}: calibrated inside the region of interest {short(record)}, which is "
            "no longer there unchanged; give that region with --roi"
        )
    return found
