"""Several labelled folders trained on as one dataset (``train DATA DATA ...``): a line's
first images and those reviewed since, each folder in its own layout, without copying
them into one; and a published dataset's own train/test division (``--split``).

With more than one folder, each image's id and group are prefixed with its folder as
given (``reviewed/good/x``), or for a folder of a dataset (``kolektorsdd/kos05``) with
the dataset's (``kolektorsdd/kos05/Part0``): ids stay unique, a folder's groups (``kosNN``)
never join another folder's in cross-validation, and an image read twice (a dataset and
one of its folders) is refused.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from psicbatch.data.layouts import (
    PARTS,
    SampleRef,
    folder_of_dataset,
    read_dataset,
    resolve_layout,
)
from psicbatch.errors import PsicbatchError

WHOLE = "all"  # --split all: every image, the published division ignored
SPLITS = (WHOLE, *PARTS)


def read_datasets(
    roots: Sequence[Path], layout: str, split: str = WHOLE
) -> tuple[list[SampleRef], list[str]]:
    """Every folder's samples, and each folder's layout (``layout``, or for ``auto`` the
    one the folder matches). ``split``: of a folder with a published train/test division
    (KolektorSDD2, DAGM), only that part; other folders are read whole."""
    layouts = [resolve_layout(root, layout) for root in roots]
    if len(roots) > 1:
        _refuse_repeats(roots)
    samples = []
    read_from: dict[str, Path] = {}  # id -> the folder it was read from
    for root, found in zip(roots, layouts, strict=True):
        read = _part(read_dataset(root, found), split, root, found)
        if len(roots) > 1:  # ids and groups apart: each begins with its dataset's folder
            part = folder_of_dataset(root, found)
            prefix = Path(os.path.normpath(root if part is None else part.dataset)).as_posix()
            read = [
                replace(sample, id=f"{prefix}/{sample.id}", group=f"{prefix}/{sample.group}")
                for sample in read
            ]
            _refuse_read_twice(read, root, read_from)
        samples += read
    if split != WHOLE and not any(sample.subset for sample in samples):
        raise PsicbatchError(
            f"{datasets_text(roots)}: --split {split}: no published train/test division "
            f"(the {datasets_text(layouts)} layout has none; kolektorsdd2 and dagm have one)"
        )
    return samples, layouts


def _part(samples: list[SampleRef], split: str, root: Path, layout: str) -> list[SampleRef]:
    """The samples of one folder in the ``split`` part, where it has that division."""
    if split == WHOLE or not any(sample.subset for sample in samples):
        return samples
    part = [sample for sample in samples if sample.subset == split]
    if not part:
        raise PsicbatchError(f"{root}: no images in its {split} part (the {layout} layout)")
    return part


def division_note(roots: Sequence[Path], samples: Sequence[SampleRef], split: str) -> str | None:
    """Which part of a published train/test division was read, or that both were: a
    model trained on both parts and scored on one is scored on images it learnt."""
    parts = Counter(sample.subset for sample in samples if sample.subset)
    if len(parts) < (1 if split != WHOLE else 2):  # nothing left out, nothing to leave out
        return None
    others = ", other folders whole" if sum(parts.values()) < len(samples) else ""
    folders = datasets_text(roots)
    if split != WHOLE:
        return f"{folders}: the {parts[split]} images of the published {split} part{others}"
    counts = " and ".join(f"{parts[name]} {name}" for name in PARTS if parts[name])
    return (
        f"{folders}: the published train and test parts read together ({counts} images"
        f"{others}); --split train or --split test reads one"
    )


def part_text(split: str) -> str:
    """`` (test part)`` after a dataset's name where ``--split`` chose a part."""
    return "" if split == WHOLE else f" ({split} part)"


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


def _refuse_read_twice(read: list[SampleRef], root: Path, read_from: dict[str, Path]) -> None:
    """One line where ``root`` gives an image an earlier folder gave (a dataset and one of
    its folders: it would weigh twice and could sit on both sides of a fold); records
    ``read``'s ids otherwise."""
    again = [sample for sample in read if sample.id in read_from]
    if again:
        more = f" and {len(again) - 1} more" if len(again) > 1 else ""
        raise PsicbatchError(
            f"{root}: its images are also read from {read_from[again[0].id]} "
            f"({again[0].image_path}{more}); give each folder once"
        )
    read_from.update((sample.id, root) for sample in read)
