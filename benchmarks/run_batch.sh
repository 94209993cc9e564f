#!/usr/bin/env bash
# A CPU run end to end at batch auto (1 at 1408x512 on a CPU) against batch 8, two rounds
# alternating: the first 96 KolektorSDD images, an untrained width-0.25 model at 1408x512.
# Usage: benchmarks/run_batch.sh OUT_DIR [KOLEKTORSDD]
set -euo pipefail
out=${1:?usage: benchmarks/run_batch.sh OUT_DIR [KOLEKTORSDD]}
data=${2:-../shared/data/kolektorsdd}
mkdir -p "$out"
psicbatch init "$out/model.pt" --width 0.25 --input-size 1408x512 --overwrite > /dev/null
images=("$data"/kos*/Part*.jpg)
printf '%s\n' "${images[@]:0:96}" > "$out/list.txt"
psicbatch info > "$out/machine.txt"
for round in 1 2; do
  for batch in auto 8; do
    psicbatch run --list "$out/list.txt" --model "$out/model.pt" --device cpu \
      --batch-size "$batch" --out "$out/results-$batch-$round.parquet" --overwrite \
      > "$out/run-$batch-$round.txt" 2>&1
  done
done
