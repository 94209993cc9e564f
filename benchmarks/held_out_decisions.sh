#!/usr/bin/env bash
# Decisions chosen on validation images, checked on images no step has seen, on the real
# KolektorSDD: train on the folders of one cross-validation fold's training part, then
# split its test folders in two (alternately): calibrate on the first half, and score the
# second with `eval --decisions`; then run the decisions on the second half and score what
# that run decided against the labels (`eval RESULTS --labels`, no inference).
#   benchmarks/held_out_decisions.sh DATA SPLITS OUT [FOLD]
# DATA: the KolektorSDD folder (kosNN folders); SPLITS: a cv run's splits.json (its folds
# are whole folders). The three parts are folders of links to DATA's folders, under OUT.
# A training folder holding a copy of a tested folder's image (KolektorSDD's kos26 is
# kos01 again) is left out of training, so that no step scores images training saw.
# TRAIN_ARGS replaces the training options (default: those of kolektorsdd-cv3-dice).
set -euo pipefail
data=$(realpath "$1") splits=$(realpath "$2") out=$(realpath -m "$3") fold=${4:-1}
read -r -a training <<< "${TRAIN_ARGS:---width 0.5 --input-size 704x256 --seg-epochs 40 --cls-epochs 30 --pixel-threshold iou --dice-weight 1}"
here=$(cd "$(dirname "$0")/.." && pwd)
psicbatch=${PSICBATCH:-$here/.venv/bin/psicbatch}
mkdir -p "$out"
"$here/.venv/bin/python" - "$data" "$splits" "$out" "$fold" <<'PY'
import json, os, sys
from pathlib import Path

from psicbatch.fingerprints import ImageSet

data, splits, out, fold = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
tested = sorted({i.split("/")[0] for i in json.loads(splits.read_text())["test_ids"][fold - 1]})
folders = sorted(p.name for p in data.iterdir() if p.is_dir() and p.name.startswith("kos"))
images = {f: ImageSet.of_files(sorted((data / f).glob("*.jpg"))).digests for f in folders}
seen = set().union(*(images[f] for f in tested))
copies = [f for f in folders if f not in tested and images[f] & seen]
print(f"left out of training (copies of tested images): {' '.join(copies) or 'none'}")
parts = {
    "train": [f for f in folders if f not in tested and f not in copies],
    "validation": tested[0::2],
    "test": tested[1::2],
}
for name, chosen in parts.items():
    (out / "data" / name).mkdir(parents=True, exist_ok=True)
    for folder in chosen:
        link = out / "data" / name / folder
        if not link.exists():
            os.symlink(data / folder, link)
    print(f"{name}: {len(chosen)} folders")
PY
model="$out/model.pt"
if [ ! -f "$model" ]; then
  "$psicbatch" train "$out/data/train" --layout kolektorsdd --out "$model" "${training[@]}" --quiet \
    $([ -f "$model.partial" ] && echo --resume)
fi
rm -rf "$out/validation" "$out/test" "$out/audit" "$out/test-run.parquet"
"$psicbatch" eval "$model" "$out/data/validation" --layout kolektorsdd -o "$out/validation" -q >/dev/null
"$psicbatch" calibrate "$out/validation/predictions.parquet" -o "$out/decisions.json" --overwrite
"$psicbatch" eval "$model" "$out/data/test" --layout kolektorsdd --decisions "$out/decisions.json" \
  -o "$out/test" -q
"$psicbatch" run "$out/data/test" --layout kolektorsdd --model "$model" \
  --decisions "$out/decisions.json" -o "$out/test-run.parquet" -q
"$psicbatch" eval "$out/test-run.parquet" --labels "$out/data/test" --layout kolektorsdd \
  -o "$out/audit" -q
