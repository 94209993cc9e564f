#!/usr/bin/env bash
# Training size on images smaller than 512x512's pixels: KolektorSDD scaled down to about
# KolektorSDD2's size (230 px wide), then two 3-fold cross-validations on the same folds,
# `--input-size auto` (the images' own size) and 512x512 (upscaled to it).
#   benchmarks/small_images.sh OUT_DIR [SCALE]     # SCALE 0.46 by default: 500 px -> 230
# Images are scaled with Lanczos filtering; a label pixel is defective where any part of
# it was (box filter > 0), so thin cracks stay in the labels. The scaled copy lives in a
# temporary folder, removed at the end. Each report lands in OUT_DIR/auto and
# OUT_DIR/square (fold models included: about 5 MB each).
set -euo pipefail
out=$(realpath -m "${1:?usage: benchmarks/small_images.sh OUT_DIR [SCALE]}")
scale=${2:-0.46}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
data=${DATA:-$here/../shared/data/kolektorsdd}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" - "$data" "$work/small" "$scale" <<'EOF'
import sys
from pathlib import Path

from PIL import Image

source, target, scale = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
for path in sorted(source.glob("kos*/Part*")):
    image = Image.open(path)
    size = (round(image.width * scale), round(image.height * scale))
    destination = target / path.parent.name / path.name
    destination.parent.mkdir(parents=True, exist_ok=True)
    if "_label" in path.stem:
        box = image.convert("L").resize(size, Image.Resampling.BOX)
        box.point(lambda value: 255 if value > 0 else 0).save(destination)
    else:
        image.resize(size, Image.Resampling.LANCZOS).save(destination, quality=95)
print(f"scaled {source} by {scale} into {target}")
EOF
mkdir -p "$out"
cd "$here"
"$python" -m psicbatch cv "$work/small" --layout kolektorsdd --folds 3 --quiet --out "$out/auto"
"$python" -m psicbatch cv "$work/small" --layout kolektorsdd --folds 3 --quiet \
    --input-size 512x512 --out "$out/square"
