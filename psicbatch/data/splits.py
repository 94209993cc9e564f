"""Deterministic k-fold splits by group, stratified so every fold holds defective images
(and each defect type a review named)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from psicbatch.data.layouts import SampleRef
from psicbatch.errors import PsicbatchError


def kfold_by_group(
    samples: list[SampleRef],
    folds: int,
    seed: int = 0,
    digests: Sequence[bytes | None] | None = None,
) -> list[list[str]]:
    """Test-set sample ids for each fold.

    Whole groups (a ``kosNN`` folder, or a single image) go to one fold, so
    related images never sit on both sides of a split; with ``digests`` (each sample's
    image file, ``fingerprints.file_digest``), groups holding an identical image count as
    one (KolektorSDD's kos01 and kos26 hold the same eight images). Groups with defects
    are dealt out first, each to the fold with the fewest defective images so far, then
    defect-free groups to the fold with the fewest images; the order is shuffled with
    ``seed``. Where defect types are named (a review's subfolders, DAGM's classes), the
    rarest types' groups are dealt first, each to the fold with the fewest of its types:
    three images of a rare type go to three folds, so every fold's model trains on some
    of them (without types, the same folds).
    """
    if folds < 2:
        raise PsicbatchError(f"cross-validation needs at least 2 folds, got {folds}")
    joined = joined_groups(samples, digests or [None] * len(samples))
    groups: dict[str, list[SampleRef]] = defaultdict(list)
    for sample in samples:
        groups[joined.get(sample.group, sample.group)].append(sample)
    defective = sorted(g for g, members in groups.items() if any(s.is_defective for s in members))
    clean = sorted(set(groups) - set(defective))
    if len(defective) < folds:
        raise PsicbatchError(
            f"{folds} folds need at least {folds} groups with defective images, "
            f"found {len(defective)}"
        )
    rng = random.Random(seed)
    rng.shuffle(defective)
    rng.shuffle(clean)
    kinds = {group: _defect_types(groups[group]) for group in defective}
    images_of_type = Counter(s.defect_type for s in samples if s.is_defective)
    defective.sort(key=lambda group: min(images_of_type[kind] for kind in kinds[group]))
    test_ids: list[list[str]] = [[] for _ in range(folds)]
    defects_in = [0] * folds
    of_type: list[Counter[str]] = [Counter() for _ in range(folds)]
    for group in defective:
        fold = min(
            range(folds),
            key=lambda f: (
                sum(of_type[f][kind] for kind in kinds[group]),
                defects_in[f],
                len(test_ids[f]),
            ),
        )
        test_ids[fold] += [s.id for s in groups[group]]
        defects_in[fold] += sum(s.is_defective for s in groups[group])
        of_type[fold].update(s.defect_type for s in groups[group] if s.is_defective)
    for group in clean:
        fold = min(range(folds), key=lambda f: len(test_ids[f]))
        test_ids[fold] += [s.id for s in groups[group]]
    return [sorted(ids) for ids in test_ids]


def _defect_types(members: list[SampleRef]) -> set[str]:
    return {s.defect_type for s in members if s.is_defective}


GROUP_PREFIX = "group-by:"  # groups a pattern names: never a dataset's own group


def grouped_by(samples: list[SampleRef], pattern: str) -> list[SampleRef]:
    """The samples with the groups ``pattern`` names: images of one part (several cameras
    or sides) must share a fold, or a model is tested on a part it was trained on.
    Samples it does not match keep their own group (see ``pattern_groups``)."""
    names = pattern_groups([sample.id for sample in samples], pattern)
    return [
        sample if name is None else replace(sample, group=name)
        for sample, name in zip(samples, names, strict=True)
    ]


def compiled_pattern(pattern: str) -> re.Pattern[str]:
    """A ``--group-by`` pattern, or a one-line error saying why it is none."""
    try:
        return re.compile(pattern)
    except re.error as error:
        raise PsicbatchError(
            f"--group-by {pattern!r}: not a regular expression ({error})"
        ) from None


def group_name(compiled: re.Pattern[str], text: str) -> str | None:
    """What ``compiled`` names in ``text``: its first capture group, or else its whole
    match; None where it does not match, or an optional group took no part in it."""
    found = compiled.search(text)
    return None if found is None else found.group(1 if compiled.groups else 0)


def pattern_groups(ids: Sequence[str], pattern: str, named: str = "id") -> list[str | None]:
    """The group ``pattern`` names for each id (a sample's path in the dataset without
    the extension, ``good/part12_cam1``), None where it names none: the regular expression
    is searched in the id, and its first capture group, or else its whole match, names
    the group. A pattern that matches no id is refused, since it would group nothing
    (``named``: what the ids are, for that message)."""
    compiled = compiled_pattern(pattern)
    names: list[str | None] = []
    for sample_id in ids:
        name = group_name(compiled, sample_id)
        names.append(None if name is None else f"{GROUP_PREFIX}{name}")
    if all(name is None for name in names):
        example = f" (such as {ids[0]})" if ids else ""
        raise PsicbatchError(f"--group-by {pattern!r} matches no image's {named}{example}")
    return names


def joined_groups(samples: list[SampleRef], digests: Sequence[bytes | None]) -> dict[str, str]:
    """Each group that shares an identical image with another group, mapped to the first
    name (sorted) of all the groups so linked; groups with images of their own are left
    out."""
    parent: dict[str, str] = {}

    def root(group: str) -> str:
        while parent.get(group, group) != group:
            group = parent[group]
        return group

    first_holder: dict[bytes, str] = {}
    for sample, digest in zip(samples, digests, strict=True):
        if digest is None:
            continue
        holder = first_holder.setdefault(digest, sample.group)
        a, b = sorted((root(holder), root(sample.group)))
        if a != b:
            parent[b] = a
    return {group: root(group) for group in parent}


def save_splits(path: Path, test_ids: list[list[str]], seed: int) -> None:
    path.write_text(json.dumps({"folds": len(test_ids), "seed": seed, "test_ids": test_ids}))
