#!/usr/bin/env bash
# Training size on images smaller than 512x512's pixels: KolektorSDD scaled down to about
# KolektorSDD2's size (230 px wide), then two 3-fold cross-validations on the same folds,
# `--input-size auto` (the images' own size) and 512x512 (upscaled to it).
#   benchmarks/small_images.sh OUT_DIR [SCALE]     # SCALE 0.46 by default: 500 px -> 230
# Images are scaled as benchmarks/scaled_kolektorsdd.py says; the scaled copy lives in a
# temporary folder, removed at the end. Each report lands in OUT_DIR/auto and
# OUT_DIR/square (fold models included: about 5 MB each).
source "$(dirname "$0")/scaled_kolektorsdd.sh"
mkdir -p "$out"
cd "$here"
"$python" -m psicbatch cv "$work/small" --layout kolektorsdd --folds 3 --quiet --out "$out/auto"
"$python" -m psicbatch cv "$work/small" --layout kolektorsdd --folds 3 --quiet \
    --input-size 512x512 --out "$out/square"
