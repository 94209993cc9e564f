#!/usr/bin/env bash
# Peak memory and time of `psicbatch eval` on a real dataset, alternating between this
# checkout and another one (an earlier commit), each in a fresh process.
#   benchmarks/eval_memory.sh DATA LAYOUT OUT OTHER_CHECKOUT [PAIRS]
# The model is untrained (psicbatch init) at width 0.25 and 1408x512: scoring is what is
# measured, not the figures. Peak RSS and elapsed seconds come from GNU time.
set -euo pipefail
data=$(realpath "$1") layout=$2 out=$(realpath -m "$3") other=$(realpath "$4") pairs=${5:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
source "$here/benchmarks/alternate.sh"
mkdir -p "$out"
[ -f "$out/model.pt" ] || (cd "$here" && "$python" -m psicbatch init "$out/model.pt" --width 0.25 --input-size 1408x512)
machine_facts "$out"
evaluation() {
  ARGS=(eval "$out/model.pt" "$data" --layout "$layout" --out "$out/eval-$1-$2" --quiet)
}
alternate "$out" "$other" "$pairs" evaluation
