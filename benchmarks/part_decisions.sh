#!/usr/bin/env bash
# A line passes or rejects a part, not an image: KolektorSDD's commutators are each imaged
# eight times (kosNN/Part0..7). A 3-fold cross-validation of KolektorSDD scaled down (as
# benchmarks/small_images.sh scales it, training defaults) whose report counts escapes in
# images and in commutators, then decisions chosen on its pooled test predictions for no
# escaped image, without inference. (Every commutator has a defective image, so decisions
# counted in commutators cannot be chosen: calibrate --per-part refuses, no good part.)
#   benchmarks/part_decisions.sh OUT_DIR [SCALE]     # SCALE 0.46 by default: 500 px -> 230
source "$(dirname "$0")/scaled_kolektorsdd.sh"
mkdir -p "$out"
cd "$here"
"$python" -m psicbatch cv "$work/small" --layout kolektorsdd --folds 3 --quiet --out "$out/cv"
"$python" -m psicbatch calibrate "$out/cv/predictions.parquet" --overwrite \
    --out "$out/decisions.json"
