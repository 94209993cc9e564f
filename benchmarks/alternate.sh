# Sourced by the scripts that compare this checkout with another one (eval_memory.sh,
# train_memory.sh, cv_memory.sh): the machine's facts, generated images, and psicbatch
# runs alternating between the other checkout ("other") and this one ("this"), each in a
# fresh process timed by GNU time (elapsed seconds, peak RSS).

# machine_facts OUT: OUT/machine.txt, the lines every result names.
machine_facts() {
  grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /cpu: /' > "$1/machine.txt"
  echo "avx512: $(grep -o 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')" >> "$1/machine.txt"
  echo "cpus: $(nproc)" >> "$1/machine.txt"
}

# generated_images OUT COUNT SIZE: a synthetic dataset in OUT/data (made once, seed 3,
# by this checkout's psicbatch: $here and $python as the caller set them), and the
# machine's facts in OUT.
generated_images() {
  mkdir -p "$1"
  [ -f "$1/data/synth.json" ] || (cd "$here" && "$python" -m psicbatch synth "$1/data" --count "$2" --size "$3" --seed 3 -q)
  machine_facts "$1"
}

# alternate OUT OTHER PAIRS ARGUMENTS: for each pair and side, ARGUMENTS SIDE PAIR sets
# the array ARGS, and `python -m psicbatch "${ARGS[@]}"` runs in that side's checkout;
# its stdout goes to OUT/run-SIDE-PAIR.log, GNU time's line to OUT/times.txt.
alternate() {
  local out=$1 other=$2 pairs=$3 arguments=$4 here pair side root
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  for pair in $(seq "$pairs"); do
    for side in other this; do
      root=$([ "$side" = this ] && echo "$here" || echo "$other")
      "$arguments" "$side" "$pair"
      (cd "$root" && /usr/bin/time -f "$side-$pair %e s %M KiB" "$python" -m psicbatch \
        "${ARGS[@]}" > "$out/run-$side-$pair.log" 2> "$out/time-$side-$pair.txt")
      tail -n 1 "$out/time-$side-$pair.txt"
    done
  done | tee "$out/times.txt"
}
