#!/usr/bin/env bash
# Scenario: which CPU backend is fastest (what `build-engine --backend auto` picks on CPUs).
# PSIC-Net at width 0.25 and 704x256 (the KolektorSDD CV recipe's network), untrained:
# cost is what matters, so the parity check is off (random weights sit near the decision
# threshold). torch bf16 and ONNX Runtime fp32 engines, engine-only, then side by side.
# About 6 minutes on 2 cores. Results: benchmarks/results/cpu-backends/.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=benchmarks/results/cpu-backends
psicbatch init "$work/model.pt" --width 0.25 --input-size 704x256
for engine in torch:bf16 onnxruntime:fp32; do
    backend=${engine%%:*} precision=${engine##*:}
    psicbatch build-engine "$work/model.pt" --backend "$backend" --precision "$precision" \
        --max-batch 4 --no-parity-check -o "$work/$backend-$precision"
    psicbatch bench --engine "$work/$backend-$precision" --sizes 704x256 --batch 1,4 \
        --duration 40 --no-end-to-end -o "$out/$backend-$precision"
done
psicbatch bench --compare "$out/onnxruntime-fp32/bench.json" "$out/torch-bf16/bench.json" \
    | tee "$out/comparison.txt"
