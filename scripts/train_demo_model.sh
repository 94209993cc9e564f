#!/usr/bin/env bash
# Rebuilds the bundled demo model psicbatch/assets/demo_model.pt from synthetic data.
# Deterministic (fixed seeds); about 5 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
psicbatch synth "$work/data" --count 400 --size 128x128 --defect-rate 0.35 --seed 2024
psicbatch train "$work/data" --layout folder --out "$work/demo_model.pt" \
    --width 0.125 --input-size 128x128 --seg-epochs 40 --cls-epochs 30 --seed 0 --quiet
cp "$work/demo_model.pt" psicbatch/assets/demo_model.pt
psicbatch info psicbatch/assets/demo_model.pt
