#!/usr/bin/env bash
# Scenario: the paper's full network (width 1, untrained weights: cost is what matters) at
# the paper's image sizes, on this machine's CPU, engine-only with the research-code
# baseline and the matrix-product ceiling (in the engine's precision) measured in the same run.
# About 15 minutes on 2 cores. Results: benchmarks/results/cpu-paper-sizes/, or --out DIR
# (given first); further arguments go to psicbatch bench.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results/cpu-paper-sizes
if [[ ${1:-} == --out ]]; then
    out=$2
    shift 2
fi
psicbatch bench --width 1 --sizes ksdd,dagm --batch 1,2 --duration 90 --out "$out" "$@"
