# Sourced by the benchmarks that train on KolektorSDD scaled down (small_images.sh,
# few_masks.sh): reads OUT_DIR and SCALE (0.46 by default: 500 px -> 230) from their
# arguments and scales the dataset into $work/small, a temporary folder removed on exit.
# Sets out, scale, here, python and work.
set -euo pipefail
out=$(realpath -m "${1:?usage: $0 OUT_DIR [SCALE]}")
scale=${2:-0.46}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
data=${DATA:-$here/../shared/data/kolektorsdd}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" "$here/benchmarks/scaled_kolektorsdd.py" "$data" "$work/small" "$scale"
