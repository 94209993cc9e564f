from __future__ import annotations

from pathlib import Path

import pytest

from psicbatch.data.layouts import SampleRef
from psicbatch.data.splits import kfold_by_group
from psicbatch.errors import PsicbatchError


def samples(groups: int = 12, per_group: int = 8, defective_groups: int = 6) -> list[SampleRef]:
    return [
        SampleRef(
            f"g{g}/{i}", Path(f"g{g}/{i}.png"), None, g < defective_groups and i == 0, f"g{g}"
        )
        for g in range(groups)
        for i in range(per_group)
    ]


def test_folds_partition_whole_groups_and_hold_defects() -> None:
    data = samples()
    folds = kfold_by_group(data, 3, seed=1)
    ids = [i for fold in folds for i in fold]
    assert sorted(ids) == sorted(s.id for s in data)  # every sample exactly once
    group_of = {s.id: s.group for s in data}
    fold_groups = [{group_of[i] for i in fold} for fold in folds]
    assert all(a.isdisjoint(b) for a in fold_groups for b in fold_groups if a is not b)
    defective = {s.id for s in data if s.is_defective}
    assert [len(defective & set(fold)) for fold in folds] == [2, 2, 2]
    assert [len(fold) for fold in folds] == [32, 32, 32]


def test_folds_are_deterministic_and_seeded() -> None:
    data = samples()
    assert kfold_by_group(data, 3, seed=4) == kfold_by_group(data, 3, seed=4)
    assert kfold_by_group(data, 3, seed=4) != kfold_by_group(data, 3, seed=5)


def test_too_few_defective_groups() -> None:
    with pytest.raises(PsicbatchError, match="3 folds need at least 3 groups"):
        kfold_by_group(samples(defective_groups=2), 3)
