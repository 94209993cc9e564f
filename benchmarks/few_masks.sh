#!/usr/bin/env bash
# Training with masks for only some defective images: KolektorSDD (scaled by SCALE, as
# benchmarks/small_images.sh scales it) sorted as a review would sort it (the classes
# layout: good/, defective/, masks/), then 3-fold cross-validations with the training
# defaults on the same folds: every defective image's mask (all/), every second one's
# (half/) and every fourth one's (quarter/); the others are images the review sorted as
# defective without drawing their defect. Each run's report lands in OUT_DIR/NAME (fold
# models included), and OUT_DIR/summary.md sets them side by side (with the runs of
# benchmarks/few_masks_dropped.sh, which leaves the unmasked images out, once made).
#   benchmarks/few_masks.sh OUT_DIR [SCALE]     # SCALE 0.46 by default: 500 px -> 230
# The classes layout has no kosNN groups: folds split a folder's images (copies of one
# image are still kept together); all three runs have the same folds.
source "$(dirname "$0")/scaled_kolektorsdd.sh"
"$python" "$here/benchmarks/kolektorsdd_review.py" "$work/small" "$work"
mkdir -p "$out"
cd "$here"
for review in all half quarter; do
    "$python" -m psicbatch cv "$work/$review" --folds 3 --quiet --out "$out/$review"
done
cmp "$out/all/splits.json" "$out/half/splits.json"
cmp "$out/all/splits.json" "$out/quarter/splits.json"
"$python" "$here/benchmarks/runs_summary.py" "$out" > "$out/summary.md"
cat "$out/summary.md"
