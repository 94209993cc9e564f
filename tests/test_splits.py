from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from psicbatch.data.layouts import SampleRef
from psicbatch.data.splits import joined_groups, kfold_by_group
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


def test_groups_holding_an_identical_image_share_a_fold() -> None:
    """KolektorSDD's kos01 and kos26 hold the same image files: split apart, a fold's
    model would be tested on copies of its training images. Digests link such groups
    (chains too: g1-g7 and g7-g9 put all three together); without a shared image, the
    folds are those made without digests."""
    data = samples()
    distinct: list[bytes | None] = [n.to_bytes(2, "big") for n in range(len(data))]
    for seed in range(6):
        assert kfold_by_group(data, 3, seed, distinct) == kfold_by_group(data, 3, seed)
    shared = list(distinct)
    position = {s.id: n for n, s in enumerate(data)}
    shared[position["g7/3"]] = shared[position["g1/5"]]  # g7 holds a copy of a g1 image
    shared[position["g9/0"]] = shared[position["g7/6"]]  # and g9 one of a g7 image
    linked = ("g1", "g7", "g9")
    split_apart = 0
    for seed in range(6):
        assert len({_fold_of(data, seed, shared)[g] for g in linked}) == 1, seed
        split_apart += len({_fold_of(data, seed, None)[g] for g in linked}) > 1
    assert split_apart  # the case at stake: without digests they are split apart
    assert joined_groups(data, shared) == {"g7": "g1", "g9": "g1"}


def _fold_of(
    data: list[SampleRef], seed: int, digests: list[bytes | None] | None
) -> dict[str, int]:
    """Each group's fold."""
    folds = kfold_by_group(data, 3, seed, digests)
    assert sorted(i for fold in folds for i in fold) == sorted(s.id for s in data)
    return {i.split("/")[0]: n for n, fold in enumerate(folds) for i in fold}


def _typed(data: list[SampleRef], type_of: dict[str, str]) -> list[SampleRef]:
    return [replace(s, defect_type=type_of.get(s.group, "")) if s.is_defective else s for s in data]


def test_each_defect_type_is_spread_over_the_folds() -> None:
    """Three groups of a rare type go to three folds whatever the seed, so each fold's
    model trains on some of them; one type for all is no information: the untyped folds."""
    data = samples(groups=15, defective_groups=9)
    rare = {"g2": "pit", "g5": "pit", "g7": "pit"}
    together = 0
    for seed in range(8):
        typed = kfold_by_group(_typed(data, {g: "crack" for g in GROUPS} | rare), 3, seed)
        fold_of = {i.split("/")[0]: n for n, fold in enumerate(typed) for i in fold}
        assert sorted(fold_of[g] for g in rare) == [0, 1, 2], seed
        defective = {s.id for s in data if s.is_defective}
        assert [len(defective & set(fold)) for fold in typed] == [3, 3, 3]
        untyped = _fold_of(data, seed, None)
        together += len({untyped[g] for g in rare}) < 3
        one_type = _typed(data, {g: "crack" for g in GROUPS})
        assert kfold_by_group(one_type, 3, seed) == kfold_by_group(data, 3, seed)
    assert together  # the case at stake: blind to types, a fold can miss the rare one


GROUPS = [f"g{g}" for g in range(15)]


def test_a_pattern_groups_the_images_of_one_part() -> None:
    """--group-by: the first capture group names each image's group; images it does not
    match keep their own; a bad or never-matching pattern is refused in one line."""
    from psicbatch.data.splits import grouped_by

    data = [
        SampleRef(f"good/{name}", Path(f"good/{name}.png"), None, False, f"good/{name}")
        for name in ("p1_cam1", "p1_cam2", "p2_cam1", "other")
    ]
    grouped = {s.id: s.group for s in grouped_by(data, r"(p\d+)_cam\d+$")}
    assert grouped["good/p1_cam1"] == grouped["good/p1_cam2"] != grouped["good/p2_cam1"]
    assert grouped["good/other"] == "good/other"
    whole = {s.id: s.group for s in grouped_by(data, r"p\d+")}  # no group: the match
    assert whole["good/p1_cam1"] == whole["good/p1_cam2"]
    optional = {s.id: s.group for s in grouped_by(data, r"(p1)?_cam")}  # p2's takes no part
    assert optional["good/p2_cam1"] == "good/p2_cam1" != optional["good/p1_cam1"]
    with pytest.raises(PsicbatchError, match=r"--group-by '\(p': not a regular expression"):
        grouped_by(data, "(p")
    with pytest.raises(PsicbatchError, match=r"matches no image's id \(such as good/p1_cam1\)"):
        grouped_by(data, "cam9")
