#!/usr/bin/env bash
# A line passes or rejects a part, not an image: KolektorSDD's commutators are each imaged
# eight times (kosNN/Part0..7). A 3-fold cross-validation of KolektorSDD scaled down (as
# benchmarks/small_images.sh scales it, training defaults) whose report counts escapes and
# false rejects in images and in commutators, then decisions chosen on its pooled test
# predictions for no escaped image and for no escaped commutator, without inference.
#   benchmarks/part_decisions.sh OUT_DIR [SCALE]     # SCALE 0.46 by default: 500 px -> 230
source "$(dirname "$0")/scaled_kolektorsdd.sh"
mkdir -p "$out"
cd "$here"
"$python" -m psicbatch cv "$work/small" --layout kolektorsdd --folds 3 --quiet --out "$out/cv"
# Decisions from the pooled test predictions (each fold's model scored its own test
# folders), without inference: for no escaped image, and for no escaped commutator.
"$python" -m psicbatch calibrate "$out/cv/predictions.parquet" --overwrite \
    --out "$out/images.json"
"$python" -m psicbatch calibrate "$out/cv/predictions.parquet" --overwrite --per-part \
    --out "$out/parts.json"
