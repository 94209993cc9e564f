#!/usr/bin/env bash
# Where do more epochs stop helping? KolektorSDD (scaled by SCALE, as
# benchmarks/small_images.sh scales it) in three parts of whole kosNN folders
# (benchmarks/kolektorsdd_thirds.py): a model trained with the defaults on parts 1 and 2,
# every epoch scored on part 3 (train --validation), its curves in OUT_DIR/curves.md.
#   benchmarks/validation_curve.sh OUT_DIR [SCALE]     # SCALE 0.46 by default: 500 px -> 230
source "$(dirname "$0")/scaled_kolektorsdd.sh"
"$python" "$here/benchmarks/kolektorsdd_thirds.py" "$work/small" "$work/parts"
mkdir -p "$work/both" "$out"
ln -s "$work/parts/1"/* "$work/parts/2"/* "$work/both/"
cd "$here"
"$python" -m psicbatch train "$work/both" --validation "$work/parts/3" --out "$out/model.pt" \
    --overwrite 2>&1 | grep -v '━' | sed "s|$work|WORK|g; s|$here/||g" | tee "$out/train.txt"
"$python" "$here/benchmarks/validation_curve.py" "$out/model.pt" "$out" \
    "KolektorSDD scaled by $scale, in thirds of whole commutators: the defaults, thirds 1 and 2"
rm "$out/model.pt"
