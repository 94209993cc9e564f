"""The checks of a checkpoint file that need no torch: that it is there, a file, and a
complete zip archive as ``torch.save`` writes one.

Commands make them while parsing their arguments, so a mistyped path or a file that is
not a checkpoint is said at once, not after torch has loaded (about 2 s on a CPU build).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from psicbatch.errors import CheckpointError

ZIP_MAGIC = b"PK\x03\x04"  # how a zip archive, as torch.save writes one, begins


def check_checkpoint_file(path: Path) -> None:
    """A ``CheckpointError`` naming what the file at ``path`` lacks to be a checkpoint."""
    if not path.is_file():
        raise CheckpointError(path, "no such file" if not path.exists() else "not a file")
    if not zipfile.is_zipfile(path):
        with path.open("rb") as file:
            begins_as_zip = file.read(4) == ZIP_MAGIC
        raise CheckpointError(
            path,
            "damaged PyTorch file (a zip archive without its end: a copy or download cut "
            "short? copy it again)"
            if begins_as_zip
            else "not a PyTorch checkpoint (expected a torch.save zip archive, e.g. model.pt)",
        )
