#!/usr/bin/env bash
# Peak memory and time of `psicbatch train` (two-step) on generated images, alternating
# between this checkout and another one (an earlier commit), each in a fresh process.
#   benchmarks/train_memory.sh OUT OTHER_CHECKOUT [PAIRS] [COUNT] [SIZE] [WIDTH]
# One epoch of each step: the classification step's cache of every image's frozen
# outputs is what differs. Peak RSS and elapsed seconds come from GNU time.
set -euo pipefail
out=$(realpath -m "$1") other=$(realpath "$2") pairs=${3:-2} count=${4:-200}
size=${5:-512x512} width=${6:-0.25}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
mkdir -p "$out"
[ -f "$out/data/synth.json" ] || (cd "$here" && "$python" -m psicbatch synth "$out/data" --count "$count" --size "$size" --seed 3 -q)
grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /cpu: /' > "$out/machine.txt"
echo "avx512: $(grep -o 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')" >> "$out/machine.txt"
echo "cpus: $(nproc)" >> "$out/machine.txt"
for pair in $(seq "$pairs"); do
  for side in other this; do
    root=$([ "$side" = this ] && echo "$here" || echo "$other")
    rm -f "$out/model-$side-$pair.pt" "$out/model-$side-$pair.pt.partial"
    (cd "$root" && /usr/bin/time -f "$side-$pair %e s %M KiB" "$python" -m psicbatch train \
      "$out/data" --out "$out/model-$side-$pair.pt" --width "$width" --input-size "$size" \
      --seg-epochs 1 --cls-epochs 1 --quiet 2> "$out/time-$side-$pair.txt" > /dev/null)
    cat "$out/time-$side-$pair.txt"
  done
done | tee "$out/times.txt"
