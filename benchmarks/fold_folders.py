"""One cross-validation fold of a classes-layout review as two folders: its test images,
and its training images without the defective ones that have no mask (what training
would be without them, on the same test images).

    python benchmarks/fold_folders.py REVIEW SPLITS_JSON FOLD TRAIN_DIR TEST_DIR

Files are linked, not copied; FOLD counts from 1 as cv's folders do.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from psicbatch.data.layouts import read_dataset


def main(review: Path, splits: Path, fold: int, train: Path, test: Path) -> None:
    held_out = set(json.loads(splits.read_text())["test_ids"][fold - 1])
    kept = left_out = 0
    for sample in read_dataset(review, "classes"):
        if sample.id in held_out:
            target = test
        elif sample.mask_known:
            target = train
            kept += 1
        else:
            left_out += 1
            continue
        folder = "defective" if sample.is_defective else "good"
        (target / folder).mkdir(parents=True, exist_ok=True)
        (target / folder / sample.image_path.name).symlink_to(sample.image_path)
        if sample.is_defective and sample.mask_path is not None:
            (target / "masks").mkdir(exist_ok=True)
            (target / "masks" / sample.mask_path.name).symlink_to(sample.mask_path)
    print(f"fold {fold}: {kept} training images, {left_out} defective ones without a mask left out")


if __name__ == "__main__":
    main(
        Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
    )
