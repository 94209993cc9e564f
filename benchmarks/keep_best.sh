#!/usr/bin/env bash
# Does keeping each phase's best epoch on validation images (train --keep best) give a
# better model than the last epoch's? KolektorSDD scaled by SCALE (as
# benchmarks/validation_curve.sh scales it) in three parts of whole kosNN folders
# (benchmarks/kolektorsdd_thirds.py), three rotations: trained with the defaults on one
# part, every epoch scored on the next (--validation), both models scored on the third,
# which no step saw. Summary in OUT_DIR/keep-best.md.
#   benchmarks/keep_best.sh OUT_DIR [SCALE]     # SCALE 0.46 by default: 500 px -> 230
source "$(dirname "$0")/scaled_kolektorsdd.sh"
"$python" "$here/benchmarks/kolektorsdd_thirds.py" "$work/small" "$work/parts" | tee "$work/parts.txt"
mkdir -p "$out"
cd "$here"
for rotation in 1 2 3; do
  train=$rotation validation=$((rotation % 3 + 1)) test=$(((rotation + 1) % 3 + 1))
  for keep in last best; do
    run="$out/rotation-$rotation/$keep"
    mkdir -p "$run"
    "$python" -m psicbatch train "$work/parts/$train" --validation "$work/parts/$validation" \
        --keep "$keep" --out "$work/model.pt" --overwrite 2>&1 | grep -v '━' \
        | sed "s|$work|WORK|g; s|$here/||g" > "$run/train.txt"
    "$python" -m psicbatch info "$work/model.pt" --json | sed "s|$work|WORK|g" > "$run/model.json"
    "$python" -m psicbatch eval "$work/model.pt" "$work/parts/$test" -o "$work/eval" -q > /dev/null
    sed "s|$work|WORK|g; s|$here/||g" "$work/eval/metrics.json" > "$run/test-metrics.json"
    echo "rotation $rotation: trained on part $train, validated on $validation, tested on $test" \
        > "$run/parts.txt"
  done
done
"$python" "$here/benchmarks/keep_best.py" "$out" \
    "KolektorSDD scaled by $scale; $(paste -sd';' "$work/parts.txt" | sed 's/;/; /g')"
