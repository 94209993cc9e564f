"""Identical image files in different groups of a dataset, and what they did to earlier
cross-validations whose folds split such groups apart.

A fold whose test set holds a byte-identical copy of one of its training images is tested,
for that image, on what its model learnt from. For each given ``cv`` folder (its
``splits.json`` and ``predictions.parquet``), this counts those test images per fold and
sets the paper's tables as computed from all test images beside the same tables without
them. ``psicbatch cv`` now keeps such groups within one fold.

Usage: python benchmarks/identical_images.py DATA OUT_DIR [--layout kolektorsdd]
       [--cv CV_FOLDER ...]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from psicbatch.bench.machine import machine
from psicbatch.cv_report import cross_validation_tables
from psicbatch.data.images import read_mask
from psicbatch.data.layouts import SampleRef, read_dataset
from psicbatch.data.splits import joined_groups
from psicbatch.evaluate import metrics_summary
from psicbatch.fingerprints import file_digests

SEGMENTATION, CLASSIFICATION = ("mask_miou", "boundary_miou"), ("auc", "ap", "accuracy", "fp", "fn")
TABLE_KEYS = [("table1", name) for name in SEGMENTATION] + [("table3", n) for n in CLASSIFICATION]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--layout", default="kolektorsdd")
    parser.add_argument("--cv", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    samples = read_dataset(args.data, args.layout)
    started = time.perf_counter()
    digests = file_digests(sample.image_path for sample in samples)
    hashing = time.perf_counter() - started
    holders: dict[bytes, list[str]] = defaultdict(list)
    for sample, digest in zip(samples, digests, strict=True):
        if digest is not None:
            holders[digest].append(sample.id)
    identical = sorted(ids for ids in holders.values() if len(ids) > 1)
    digest_of = {s.id: d for s, d in zip(samples, digests, strict=True)}
    defective = {s.id for s in samples if s.is_defective}
    by_id = {s.id: s for s in samples}
    result: dict[str, Any] = {
        "dataset": str(args.data),
        "images": len(samples),
        "distinct_image_files": len(holders),
        "bytes": sum(sample.image_path.stat().st_size for sample in samples),
        "hashing_seconds": round(hashing, 3),  # the page cache warm or not: one run
        "machine": machine(),
        "identical_files": identical,
        # Copies of a defective image, with each copy's annotated defect pixels.
        "identical_defective": [
            {i: _defect_pixels(by_id[i]) for i in ids} for ids in identical if set(ids) & defective
        ],
        "linked_groups": sorted(set(joined_groups(samples, digests).items())),
        "cv": [_cv_effect(folder, digest_of) for folder in args.cv],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "identical_images.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "identical_images.md").write_text(_markdown(result))
    print(_markdown(result))


def machine_line(facts: dict[str, Any]) -> str:
    return f"{facts['cores']}-core {facts['cpu']}, {facts['isa']}"


def _defect_pixels(sample: SampleRef) -> int:
    return int(read_mask(sample.mask_path).sum()) if sample.mask_path else 0


def _cv_effect(folder: Path, digest_of: dict[str, bytes | None]) -> dict[str, Any]:
    """Per fold, the test images identical to one of its training images, and the paper's
    tables with and without them."""
    test_ids = json.loads((folder / "splits.json").read_text())["test_ids"]
    rows = pq.read_table(folder / "predictions.parquet").to_pylist()
    seen_ids: list[list[str]] = []
    for fold_ids in test_ids:
        test = set(fold_ids)
        training = {digest_of[i] for i in digest_of if i not in test}
        seen_ids.append(sorted(i for i in fold_ids if digest_of[i] in training))
    seen = {i for ids in seen_ids for i in ids}
    folds = sorted({row["fold"] for row in rows})

    def tables(kept: list[dict[str, Any]]) -> dict[str, float]:
        by_fold = [metrics_summary([r for r in kept if r["fold"] == f]) for f in folds]
        computed = cross_validation_tables(by_fold)
        values = {name: computed[table][name] for table, name in TABLE_KEYS}
        # Table 1 gives mean, max and min over folds: the mean is compared.
        return {k: round(v["mean"] if isinstance(v, dict) else v, 2) for k, v in values.items()}

    return {
        "cv": str(folder),
        "seen_in_training_per_fold": seen_ids,
        "seen_defective": sorted(seen & {r["id"] for r in rows if r["is_defective"]}),
        "all_test_images": tables(rows),
        "without_seen": tables([r for r in rows if r["id"] not in seen]),
    }


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Identical image files in {result['dataset']}",
        "",
        f"{result['images']} images, {result['distinct_image_files']} distinct files. "
        f"Their digests took {result['hashing_seconds']:.2f} s for "
        f"{result['bytes'] / 1e6:.0f} MB ({machine_line(result['machine'])}).",
        "",
        "Byte-identical images (sample ids): "
        + "; ".join(", ".join(ids) for ids in result["identical_files"])
        + ".",
        "",
        "Of them defective in at least one copy, with each copy's annotated defect pixels: "
        + (
            "; ".join(
                ", ".join(f"{i} ({pixels})" for i, pixels in copies.items())
                for copies in result["identical_defective"]
            )
            or "none"
        )
        + ".",
        "",
        "Groups linked by an identical image (kept in one fold by `psicbatch cv`): "
        + (", ".join(f"{a} with {b}" for b, a in result["linked_groups"]) or "none")
        + ".",
    ]
    for effect in result["cv"]:
        counts = ", ".join(
            f"fold {n}: {len(ids)}" for n, ids in enumerate(effect["seen_in_training_per_fold"], 1)
        )
        lines += [
            "",
            f"## {effect['cv']}",
            "",
            f"Test images identical to one of their fold's training images: {counts} "
            f"(defective: {', '.join(effect['seen_defective']) or 'none'}).",
            "",
            "| test images | " + " | ".join(name for _, name in TABLE_KEYS) + " |",
            "| --- |" + " --- |" * len(TABLE_KEYS),
        ]
        for label, key in (("all", "all_test_images"), ("without those", "without_seen")):
            values = effect[key]
            lines.append(f"| {label} | " + " | ".join(str(values[n]) for _, n in TABLE_KEYS) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
