#!/usr/bin/env bash
# A line's light drifts (a lamp ages, an exposure is changed): how does a trained model
# judge the same parts a fifth darker or a quarter brighter, and does training with
# random gains (--brightness) keep it steadier? KolektorSDD (scaled by SCALE, as
# benchmarks/small_images.sh scales it) in three parts of whole kosNN folders
# (benchmarks/kolektorsdd_thirds.py). Three times, each part once the test set, a model
# trains on the other two with the training defaults ("plain") and with --brightness 0.3
# ("brightness"); each is scored on the test part as it is and with every pixel
# multiplied by 0.8 and by 1.25 (benchmarks/lighting_drift.py). RUN-xGAIN/foldN holds
# the model's model.json and that lighting's evaluation/; OUT_DIR/summary.md sets them
# side by side. A rerun into the same OUT_DIR skips what is there already.
#   benchmarks/lighting_drift.sh OUT_DIR [SCALE]     # SCALE 0.46 by default: 500 px -> 230
source "$(dirname "$0")/scaled_kolektorsdd.sh"
source "$here/benchmarks/train_and_score.sh"
"$python" "$here/benchmarks/kolektorsdd_thirds.py" "$work/small" "$work/parts"
cd "$here"
gains=(1.0 0.8 1.25)
declare -A training=([plain]="" [brightness]="--brightness 0.3")
for rotation in 1 2 3; do
    mkdir -p "$work/both$rotation"
    ln -s "$work/parts/$((rotation % 3 + 1))"/* "$work/parts/$(((rotation + 1) % 3 + 1))"/* \
        "$work/both$rotation/"
    for gain in "${gains[@]}"; do
        "$python" "$here/benchmarks/lighting_drift.py" "$work/parts/$rotation" \
            "$work/test$rotation-x$gain" "$gain"
    done
done
for run in plain brightness; do
    for rotation in 1 2 3; do
        model="$out/$run/fold$rotation/model.pt"
        # shellcheck disable=SC2086  # the options split into words on purpose
        train_once "$model" "$work/both$rotation" ${training[$run]}
        for gain in "${gains[@]}"; do
            score_once "$model" "$work/test$rotation-x$gain" "$out/$run-x$gain/fold$rotation"
        done
    done
done
runs=()
for run in plain brightness; do for gain in "${gains[@]}"; do runs+=("$run-x$gain"); done; done
"$python" "$here/benchmarks/runs_summary.py" "$out" "${runs[@]}" > "$out/summary.md"
cat "$out/summary.md"
