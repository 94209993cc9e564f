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
mkdir -p "$out"
[ -f "$out/model.pt" ] || (cd "$here" && "$python" -m psicbatch init "$out/model.pt" --width 0.25 --input-size 1408x512)
grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /cpu: /' > "$out/machine.txt"
echo "avx512: $(grep -o 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')" >> "$out/machine.txt"
echo "cpus: $(nproc)" >> "$out/machine.txt"
for pair in $(seq "$pairs"); do
  for side in other this; do
    root=$([ "$side" = this ] && echo "$here" || echo "$other")
    (cd "$root" && /usr/bin/time -f "$side-$pair %e s %M KiB" "$python" -m psicbatch eval \
      "$out/model.pt" "$data" --layout "$layout" --out "$out/eval-$side-$pair" --quiet \
      > "$out/eval-$side-$pair.log" 2> "$out/time-$side-$pair.txt")
    cat "$out/time-$side-$pair.txt"
  done
done | tee "$out/times.txt"
