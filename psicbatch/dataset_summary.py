"""``psicbatch info DATA [DATA ...]``: how psicbatch reads a labelled dataset, before hours of
training on it: the layout it matched, the parts of a published train/test division, the
images of each kind, the defective images without a mask, the defect types a review
named, the groups cross-validation folds are made of, and the input size
``--input-size auto`` would train at."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psicbatch.data.combined import WHOLE, datasets_text, part_text, read_datasets
from psicbatch.data.image_check import unusable_images
from psicbatch.data.layouts import AUTO, PARTS, SampleRef, folder_of_dataset
from psicbatch.data.splits import grouped_by, joined_groups
from psicbatch.fingerprints import copies_note, file_digests
from psicbatch.network_size import auto_input_size
from psicbatch.scores import named_types

LISTED = 20  # images that cannot be used, named one by one


def dataset_summary(
    paths: Sequence[Path], layout: str, group_by: str | None = None, split: str = WHOLE
) -> dict[str, Any]:
    """The dataset in ``paths`` (several: as ``train`` reads them together) as ``layout``
    reads it (chosen by --layout, or for ``auto`` the one layout each folder matches), of
    a published train/test division the ``split`` part, its cv groups as
    ``cv --group-by`` makes them where given."""
    samples, layouts = read_datasets(paths, layout, split)
    if group_by is not None:
        samples = grouped_by(samples, group_by)
    defective = [sample for sample in samples if sample.is_defective]
    unmasked = sum(not sample.mask_known for sample in defective)
    types = named_types([s.defect_type for s in samples], [s.is_defective for s in samples])
    per_type = Counter(sample.defect_type for sample in defective)
    digests = file_digests(sample.image_path for sample in samples)
    joined = joined_groups(samples, digests)
    groups = {joined.get(s.group, s.group) for s in samples}
    with_defects = {joined.get(s.group, s.group) for s in defective}
    unusable, depths = unusable_images(samples)
    if depths and depths[0] == 16 and 8 in depths:  # 16-bit training refuses 8-bit images
        unusable, depths = unusable_images(samples, 16)
    refused = {error.path for error in unusable}
    readable = [sample for sample in samples if sample.image_path not in refused]
    _, said = auto_input_size(readable) if readable else (None, "none: no image can be read")
    parts_of = [folder_of_dataset(path, found) for path, found in zip(paths, layouts, strict=True)]
    summary: dict[str, Any] = {
        "folder": f"{datasets_text(paths)}{part_text(split)}",
        "part of the dataset": [
            f"{part.dataset} (its folder {'/'.join(part.inside)})" for part in parts_of if part
        ],
        "layout": datasets_text(layouts)
        + ("" if layout != AUTO else " (auto: the one its folders match)"),
        "published parts": _parts(samples),
        "images": len(samples),
        "good": len(samples) - len(defective),
        "defective": len(defective),
        "defective without a mask": unmasked,
        "defect types": [f"{kind or '(no type)'}: {per_type[kind]}" for kind in types],
        "cv groups": (
            f"{len(groups)}{'' if group_by is None else f' by --group-by {group_by}'}, "
            f"{len(with_defects)} of them with defective images, "
            + (
                f"so at most {len(with_defects)} folds"
                if len(with_defects) >= 2
                else "too few for cross-validation (2 folds need 2)"
            )
            + " (groups holding an identical image count as one)"
        ),
        "identical images": copies_note([s.id for s in samples], digests) or "none",
        "input size (auto)": said,
        "pixel depth": _depths(depths),
        "images that cannot be used": [str(error) for error in unusable[:LISTED]]
        + ([f"and {len(unusable) - LISTED} more"] if len(unusable) > LISTED else []),
    }
    for empty in ("published parts", "part of the dataset", "images that cannot be used"):
        if not summary[empty]:
            del summary[empty]
    if not unmasked:
        del summary["defective without a mask"]
    if not types:
        del summary["defect types"]
    return summary


def _depths(depths: Sequence[int | None]) -> str:
    """The images' bit depths, counted, and where 8-bit images follow a 16-bit first one,
    that training at the depth ``--bit-depth auto`` takes (the first image's) refuses them."""
    counts = Counter(depth for depth in depths if depth is not None)
    said = ", ".join(
        f"{depth}-bit: {count}" for depth, count in sorted(counts.items(), reverse=True)
    )
    if depths and depths[0] == 16 and counts[8]:
        said += (
            " (train --bit-depth auto reads 16 bits, the first image's, and refuses the "
            "8-bit images: listed below)"
        )
    return said or "none can be read"


def _parts(samples: Sequence[SampleRef]) -> list[str]:
    """Each part of a published train/test division read, with its counts (none: the
    layout has no such division)."""
    lines = []
    for part in PARTS:
        members = [sample for sample in samples if sample.subset == part]
        if members:
            defective = sum(sample.is_defective for sample in members)
            lines.append(f"{part}: {len(members)} images, {defective} defective")
    return lines
