"""KolektorSDD's folders in three parts, as ``psicbatch cv --folds 3`` (seed 0) makes its
folds: whole ``kosNN`` folders, folders sharing an identical image in one part, the
defective images spread. Each part is a folder of links to its ``kosNN`` folders.

    python benchmarks/kolektorsdd_thirds.py KOLEKTORSDD PARTS_DIR   # PARTS_DIR/1, 2, 3
"""

from __future__ import annotations

import sys
from pathlib import Path

from psicbatch.data.layouts import read_dataset
from psicbatch.data.splits import kfold_by_group
from psicbatch.fingerprints import file_digests


def main(data: Path, parts: Path) -> None:
    samples = read_dataset(data, "kolektorsdd")
    digests = file_digests(sample.image_path for sample in samples)
    for part, ids in enumerate(kfold_by_group(samples, 3, 0, digests), start=1):
        folders = {Path(sample_id).parts[0] for sample_id in ids}
        (parts / str(part)).mkdir(parents=True)
        for folder in sorted(folders):
            (parts / str(part) / folder).symlink_to((data / folder).resolve())
        defective = sum(s.is_defective for s in samples if s.id in set(ids))
        print(f"part {part}: {len(folders)} folders, {len(ids)} images, {defective} defective")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
