"""Deterministic k-fold splits by group, stratified so every fold holds defective images."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from psicbatch.data.layouts import SampleRef
from psicbatch.errors import PsicbatchError


def kfold_by_group(samples: list[SampleRef], folds: int, seed: int = 0) -> list[list[str]]:
    """Test-set sample ids for each fold.

    Whole groups (a ``kosNN`` folder, a DAGM class, or a single image) go to one fold, so
    related images never sit on both sides of a split. Groups with defects are dealt out
    first, each to the fold with the fewest defective images so far, then defect-free
    groups to the fold with the fewest images; the order is shuffled with ``seed``.
    """
    if folds < 2:
        raise PsicbatchError(f"cross-validation needs at least 2 folds, got {folds}")
    groups: dict[str, list[SampleRef]] = defaultdict(list)
    for sample in samples:
        groups[sample.group].append(sample)
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
    test_ids: list[list[str]] = [[] for _ in range(folds)]
    defects_in = [0] * folds
    for group in defective:
        fold = min(range(folds), key=lambda f: (defects_in[f], len(test_ids[f])))
        test_ids[fold] += [s.id for s in groups[group]]
        defects_in[fold] += sum(s.is_defective for s in groups[group])
    for group in clean:
        fold = min(range(folds), key=lambda f: len(test_ids[f]))
        test_ids[fold] += [s.id for s in groups[group]]
    return [sorted(ids) for ids in test_ids]


def save_splits(path: Path, test_ids: list[list[str]], seed: int) -> None:
    path.write_text(json.dumps({"folds": len(test_ids), "seed": seed, "test_ids": test_ids}))
