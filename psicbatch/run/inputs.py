"""Turning the command line's sources (folders, globs, files, list files) into one list.

Datasets keep their ground-truth masks beside or below their images, as image files:
a folder scan takes them too. ``--layout`` takes a dataset's images only (the layout
readers of training and evaluation); without it, files named like such masks are counted
so the run can say so.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from psicbatch.data.combined import WHOLE, read_datasets
from psicbatch.data.images import IMAGE_SUFFIXES
from psicbatch.data.layouts import (
    GT_SUFFIX,
    LABEL_FOLDER,
    LABEL_SUFFIX,
    LAYOUTS,
    MASK_FOLDER,
    guess_layout,
)
from psicbatch.errors import PsicbatchError
from psicbatch.folder_walk import files_below
from psicbatch.paths import answering, readable_path, regular_file_bytes
from psicbatch.wording import counted

MASK_STEM_ENDINGS = (LABEL_SUFFIX.lower(), GT_SUFFIX.lower())
MASK_FOLDERS = (LABEL_FOLDER.lower(), MASK_FOLDER.lower())
MASK_NAMING = (
    f"named *{LABEL_SUFFIX} or *{GT_SUFFIX}, or in a {LABEL_FOLDER}/ or {MASK_FOLDER}/ folder"
)


def looks_like_mask(path: Path) -> bool:
    """Named or placed like a layout's ground-truth mask, in any letter case (a folder of
    copied masks need not keep the layout's spelling)."""
    return path.stem.lower().endswith(MASK_STEM_ENDINGS) or path.parent.name.lower() in MASK_FOLDERS


@dataclass
class Inputs:
    paths: list[Path]
    # Files that folder scans passed over, by extension ("" for none): not image types
    # psicbatch reads. Reported, so a folder of .gif or .webp files is not a silent no-op.
    skipped: Counter = field(default_factory=Counter)
    # Images found by folder scans and globs that look like ground-truth masks, and the
    # dataset layout the source folders look like (when they agree on one).
    mask_like: int = 0
    layout_guess: str | None = None
    # Folders below the inputs that could not be read (no permission): their images are
    # not among the inputs, which the run says rather than passing over them silently.
    unreadable: list[OSError] = field(default_factory=list)

    def skipped_note(self) -> str | None:
        """One line saying what the folder scans passed over, or None."""
        if not self.skipped:
            return None
        kinds = ", ".join(
            f"{count} {suffix or '(no extension)'}" for suffix, count in self.skipped.most_common()
        )
        return (
            f"skipped {counted(sum(self.skipped.values()), 'file')} in the input folders "
            "that psicbatch does not read "
            f"({kinds}); it reads {', '.join(IMAGE_SUFFIXES)}"
        )

    def unreadable_note(self) -> str | None:
        """One line naming the folders that could not be read, or None."""
        if not self.unreadable:
            return None
        named = [
            f"{readable_path(error.filename)} ({error.strerror or error})"
            for error in self.unreadable[:3]
        ]
        more = f" and {len(self.unreadable) - 3} more" if len(self.unreadable) > 3 else ""
        return (
            f"could not read {counted(len(self.unreadable), 'folder')} in the inputs, whose "
            f"images are not inspected: {', '.join(named)}{more}"
        )

    def mask_note(self) -> str | None:
        """One line saying that files named like masks are inspected as images, or None."""
        if not self.mask_like:
            return None
        files = "file looks" if self.mask_like == 1 else "files look"
        layout = self.layout_guess or f"({', '.join(LAYOUTS)})"
        return (
            f"{self.mask_like} input {files} like a dataset's defect masks ({MASK_NAMING}) "
            "and will be inspected as images; "
            f"--layout {layout} takes a dataset's images only"
        )


def collect_inputs(
    sources: list[str],
    list_file: Path | None = None,
    layout: str | None = None,
    split: str = WHOLE,
) -> Inputs:
    """Images in a stable order, each once.

    Folders are searched recursively for image extensions, through links to folders, each
    folder once (``files_below``); files named explicitly are taken whatever their
    extension; anything else is a glob pattern. A list file holds one path per line (blank
    lines and ``#`` comments skipped), relative to the list file's folder; its bytes are
    taken as file names as they are, whatever their encoding. With ``layout``, each source
    is a dataset folder in that layout and gives its images (of a published train/test
    division, those of the ``split`` part).
    """
    inputs = Inputs([])
    for source in sources:
        answering(source)
        if layout is None:
            inputs.paths += _expand(source, inputs)
        else:
            samples, _ = read_datasets([Path(source)], layout, split)
            inputs.paths += [sample.image_path for sample in samples]
    if layout is None:  # what the sources gave, before the list's explicit choices
        inputs.mask_like = sum(map(looks_like_mask, dict.fromkeys(inputs.paths)))
        guesses = {guess_layout(Path(source)) for source in sources} - {None}
        inputs.layout_guess = guesses.pop() if len(guesses) == 1 else None
    if list_file is not None:
        inputs.paths += _read_list(list_file)
    inputs.paths = list(dict.fromkeys(inputs.paths))
    if not inputs.paths:
        raise PsicbatchError(_nothing_found(sources, list_file, inputs))
    return inputs


def _nothing_found(sources: list[str], list_file: Path | None, inputs: Inputs) -> str:
    """Why there is nothing to inspect, naming where psicbatch looked."""
    places = [readable_path(source) for source in sources]
    if list_file is not None:
        places.append(f"the list {readable_path(list_file)}")
    if not places:
        return "no input images: give folders, files, globs or --list"
    found = (
        "; ".join(note for note in (inputs.unreadable_note(), inputs.skipped_note()) if note)
        or f"psicbatch reads {', '.join(IMAGE_SUFFIXES)}"
    )
    return f"no input images in {', '.join(places)}: {found}"


def _expand(source: str, inputs: Inputs) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        return _walk(path, inputs)
    if path.is_file() or path.is_symlink():
        return [path]
    matches = sorted(glob.glob(source, recursive=True))
    if not matches:
        raise PsicbatchError(
            f"{readable_path(source)}: no such file or folder, and no file matches it"
        )
    return [p for m in matches for p in (_walk(Path(m), inputs) if Path(m).is_dir() else [Path(m)])]


def _walk(folder: Path, inputs: Inputs) -> list[Path]:
    """The images below ``folder``; the other files and unreadable folders noted."""
    images = []
    for path in files_below(folder, inputs.unreadable):
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            images.append(path)
        else:
            inputs.skipped[readable_path(suffix)] += 1
    return images


def _read_list(list_file: Path) -> list[Path]:
    try:
        lines = regular_file_bytes(list_file).splitlines()
    except OSError as error:
        raise PsicbatchError(
            f"{readable_path(list_file)}: cannot read the list ({error.strerror})"
        ) from None
    if b"\0" in b"".join(lines[:1000]):
        raise PsicbatchError(
            f"{readable_path(list_file)}: not a list of paths (it holds NUL bytes: a binary file?)"
        )
    entries = [line.strip() for line in lines if line.strip() and not line.startswith(b"#")]
    paths = [Path(os.fsdecode(entry)) for entry in entries]
    return [p if p.is_absolute() else list_file.parent / p for p in paths]
