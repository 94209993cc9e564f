#!/usr/bin/env bash
# Peak memory and time of `psicbatch train` (two-step) on generated images, alternating
# between this checkout and another one (an earlier commit), each in a fresh process.
#   benchmarks/train_memory.sh OUT OTHER_CHECKOUT [PAIRS] [COUNT] [SIZE] [WIDTH]
# One epoch of each step. Peak RSS and elapsed seconds come from GNU time. TRAIN_ARGS
# replaces the input size (default `--input-size SIZE`), e.g. `--tile 256x256 --overlap 32`.
set -euo pipefail
out=$(realpath -m "$1") other=$(realpath "$2") pairs=${3:-2} count=${4:-200}
size=${5:-512x512} width=${6:-0.25}
read -r -a shape <<< "${TRAIN_ARGS:---input-size $size}"
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
source "$here/benchmarks/alternate.sh"
generated_images "$out" "$count" "$size"
training() {
  rm -f "$out/model-$1-$2.pt" "$out/model-$1-$2.pt.partial"
  ARGS=(train "$out/data" --out "$out/model-$1-$2.pt" --width "$width" "${shape[@]}"
    --seg-epochs 1 --cls-epochs 1 --quiet)
}
alternate "$out" "$other" "$pairs" training
