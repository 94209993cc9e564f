#!/usr/bin/env bash
# Scenario: the paper's full network (width 1, untrained weights: cost is what matters) at
# the paper's image sizes, on this machine's CPU, engine-only with the research-code
# baseline and the bf16 matrix-product ceiling measured in the same run.
# About 15 minutes on 2 cores. Results: benchmarks/results/cpu-paper-sizes/.
set -euo pipefail
cd "$(dirname "$0")/.."
psicbatch bench --width 1 --sizes ksdd,dagm --batch 1,2 --duration 90 \
    --out benchmarks/results/cpu-paper-sizes "$@"
