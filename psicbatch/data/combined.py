"""Several labelled folders trained on as one dataset (``train DATA DATA ...``): a line's
first images and those reviewed since, each folder in its own layout, without copying
them into one.

With more than one folder, each image's id and group are prefixed with its folder as
given (``reviewed/good/x``): ids stay unique, and a folder's groups (``kosNN``) never join
another folder's in cross-validation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from psicbatch.data.layouts import SampleRef, read_dataset, resolve_layout
from psicbatch.errors import PsicbatchError


def read_datasets(roots: Sequence[Path], layout: str) -> tuple[list[SampleRef], list[str]]:
    """Every folder's samples, and each folder's layout (``layout``, or for ``auto`` the
    one the folder matches)."""
    layouts = [resolve_layout(root, layout) for root in roots]
    if len(roots) == 1:
        return read_dataset(roots[0], layouts[0]), layouts
    _refuse_repeats(roots)
    samples = []
    for root, found in zip(roots, layouts, strict=True):
        prefix = Path(os.path.normpath(root)).as_posix()
        samples += [
            replace(sample, id=f"{prefix}/{sample.id}", group=f"{prefix}/{sample.group}")
            for sample in read_dataset(root, found)
        ]
    return samples, layouts


def datasets_text(values: Sequence[object]) -> str:
    """Folders or their layouts in one line (``train + reviewed``); one value as it is,
    and a value repeated for every folder once."""
    texts = [str(value) for value in values]
    return texts[0] if len(set(texts)) == 1 else " + ".join(texts)


def _refuse_repeats(roots: Sequence[Path]) -> None:
    seen: dict[Path, Path] = {}
    for root in roots:
        resolved = root.resolve()
        if resolved in seen:
            earlier = seen[resolved]
            also = "" if str(earlier) == str(root) else f" (as {earlier} and as {root})"
            raise PsicbatchError(f"{root}: the same folder given twice{also}")
        seen[resolved] = root
