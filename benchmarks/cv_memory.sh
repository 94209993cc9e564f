#!/usr/bin/env bash
# Peak memory and time of `psicbatch cv` on generated images, alternating between this
# checkout and another one (an earlier commit), each in a fresh process.
#   benchmarks/cv_memory.sh OUT OTHER_CHECKOUT [PAIRS] [COUNT] [SIZE] [WIDTH] [FOLDS]
# One epoch of each step per fold. Peak RSS and elapsed seconds come from GNU time.
set -euo pipefail
out=$(realpath -m "$1") other=$(realpath "$2") pairs=${3:-2} count=${4:-600}
size=${5:-512x512} width=${6:-0.125} folds=${7:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
source "$here/benchmarks/alternate.sh"
generated_images "$out" "$count" "$size"
crossval() {
  rm -rf "$out/cv-$1-$2"
  ARGS=(cv "$out/data" --out "$out/cv-$1-$2" --width "$width" --input-size "$size"
    --folds "$folds" --seg-epochs 1 --cls-epochs 1 --quiet)
}
alternate "$out" "$other" "$pairs" crossval
