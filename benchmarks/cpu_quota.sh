#!/usr/bin/env bash
# PSIC-Net engine-only throughput (psicbatch bench) in a cgroup whose CPU quota allows
# QUOTA CPUs, with torch on 1, 2, ... up to the physical cores' threads (OMP_NUM_THREADS;
# the last is torch's own default, which a quota does not lower), alternating, each run
# in a cgroup of its own whose throttling counts (cpu.stat) are kept beside its report;
# the table says which count psicbatch picks under that quota.
#
#   sudo benchmarks/cpu_quota.sh OUT_DIR [QUOTA] [ROUNDS] [BENCH OPTIONS...]
#
# Needs root and a writable cgroup hierarchy: v1 (/sys/fs/cgroup/cpu) or v2 (cpu.max).
set -euo pipefail
out=${1:?usage: benchmarks/cpu_quota.sh OUT_DIR [QUOTA] [ROUNDS] [BENCH OPTIONS...]}
quota=${2:-1}
rounds=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
bench=("$@")
[ ${#bench[@]} -gt 0 ] || bench=(--width 0.5 --sizes 512x512 --batch 4 --duration 10)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
period=100000
limit=$("$python" -c "print(round($quota * $period))")
mkdir -p "$out"

# cgroup NAME: a new cgroup with the quota; its folder on stdout.
cgroup() {
  local folder
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then  # v2: cpu.max, once cpu is delegated
    grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu > /sys/fs/cgroup/cgroup.subtree_control
    folder=/sys/fs/cgroup/$1
    mkdir "$folder"
    echo "$limit $period" > "$folder/cpu.max"
  else  # v1: the cpu controller's quota and period
    folder=/sys/fs/cgroup/cpu/$1
    mkdir "$folder"
    echo "$period" > "$folder/cpu.cfs_period_us"
    echo "$limit" > "$folder/cpu.cfs_quota_us"
  fi
  echo "$folder"
}

# measure NAME [VARIABLE=VALUE]: psicbatch bench in a cgroup of its own, then its counts.
measure() {
  local folder
  folder=$(cgroup "psicbatch-quota-$$-$1")
  (cd "$here" && bash -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$folder" \
    env $2 "$python" -m psicbatch bench "${bench[@]}" --no-baseline --no-end-to-end \
    --no-host-ceiling -o "$out/$1") > "$out/$1.log" 2>&1
  cp "$folder/cpu.stat" "$out/$1.cpu-stat"
  rmdir "$folder"
}

cores=$(cd "$here" && "$python" -c "from psicbatch.cpus import physical_cores; print(physical_cores())")
for round in $(seq "$rounds"); do
  for threads in $(seq "$cores"); do
    measure "threads-$threads-$round" "OMP_NUM_THREADS=$threads"
  done
done
"$python" "$here/benchmarks/cpu_quota_summary.py" "$out" "$quota" | tee "$out/cpu-quota.md"
