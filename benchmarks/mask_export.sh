#!/usr/bin/env bash
# Time and peak memory of `psicbatch report RESULTS --mask-images`, alternating between
# this checkout and another one (an earlier commit), each in a fresh process.
#   benchmarks/mask_export.sh OUT OTHER_CHECKOUT RESULTS [PAIRS]
# RESULTS: a results file with masks (e.g. a run with --masks all); each run exports into
# a new folder under OUT, and OUT/counts.txt records how many masks it wrote.
set -euo pipefail
out=$(realpath -m "$1") other=$(realpath "$2") results=$(realpath "$3") pairs=${4:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
source "$here/benchmarks/alternate.sh"
mkdir -p "$out"
machine_facts "$out"
export_masks() {
  rm -rf "$out/masks-$1-$2"
  ARGS=(report "$results" --mask-images "$out/masks-$1-$2")
}
alternate "$out" "$other" "$pairs" export_masks
for log in "$out"/run-*.log; do echo "$(basename "$log" .log): $(cat "$log")"; done > "$out/counts.txt"
