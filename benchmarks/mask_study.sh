#!/usr/bin/env bash
# Mask-quality study on KolektorSDD: the first CPU recipe (width 0.25, 704x256,
# 40 + 30 epochs, seed 0: the folds of results/kolektorsdd-cv3) with one change at a time,
# then the adopted one (width 0.5, pixel threshold for IoU) with one change, on fold 1 of 3
# only (6 to 16 minutes of training per variant on 2 cores; the larger input and the wider
# networks take two to four times as long). A later option overrides the recipe's (click
# keeps the last value).
# Results: benchmarks/results/mask-study/<variant>/. The baselines are fold 1 of
# results/kolektorsdd-cv3 and results/kolektorsdd-cv3-width0.5.
# Usage: benchmarks/mask_study.sh [VARIANT ...]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${KOLEKTORSDD:-../shared/data/kolektorsdd}
RECIPE=(--layout kolektorsdd --folds 3 --fold 1 --width 0.25 --input-size 704x256
        --seg-epochs 40 --cls-epochs 30 --quiet)
declare -A VARIANTS=(
    [alpha-cap-0.9]="--alpha-cap 0.9"
    [pixel-threshold-iou]="--pixel-threshold iou"
    [baseline-rerun]=""
    [input-1408x512]="--input-size 1408x512"
    [width-0.5]="--width 0.5"
    [width-0.75]="--width 0.75"
    # From the adopted recipe (width 0.5, pixel threshold for IoU): one change each.
    [adopted-dice-1]="--width 0.5 --pixel-threshold iou --dice-weight 1"
    [adopted-dice-1-input-1408x512]="--width 0.5 --pixel-threshold iou --dice-weight 1
        --input-size 1408x512"
)
chosen=("$@")
if [ ${#chosen[@]} -eq 0 ]; then chosen=(alpha-cap-0.9 pixel-threshold-iou); fi
for variant in "${chosen[@]}"; do
    # shellcheck disable=SC2086
    psicbatch cv "$DATA" "${RECIPE[@]}" --out "benchmarks/results/mask-study/$variant" \
        ${VARIANTS[$variant]}
done
