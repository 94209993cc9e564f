#!/usr/bin/env bash
# Resident memory of one command over time, to find where its peak is.
#   benchmarks/rss_trace.sh OUT.tsv COMMAND [ARGS...]
# Samples the command's VmRSS every 50 ms; OUT.tsv has seconds since start and MiB.
set -euo pipefail
out=$1
shift
"$@" &
pid=$!
start=$(date +%s.%N)
: > "$out"
while kill -0 "$pid" 2> /dev/null; do
  kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2> /dev/null || true)
  [ -n "$kib" ] && echo "$(date +%s.%N) $start $kib" | awk '{printf "%.2f\t%d\n", $1 - $2, $3 / 1024}' >> "$out"
  sleep 0.05
done
wait "$pid"
