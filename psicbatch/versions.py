"""Installed library versions, recorded in manifests and benchmark reports for provenance."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

NOT_INSTALLED = "not installed"  # the version recorded for a distribution that is absent


def installed_versions(names: Iterable[str]) -> dict[str, str]:
    """Each distribution's version, or NOT_INSTALLED."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = NOT_INSTALLED
    return versions
