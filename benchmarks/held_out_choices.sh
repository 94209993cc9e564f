#!/usr/bin/env bash
# What choosing on validation images gives a model (train --keep best, --thresholds-on
# validation) against the paper's last epoch with thresholds chosen on the training
# images. KolektorSDD scaled by SCALE (as benchmarks/validation_curve.sh scales it) in
# three parts of whole kosNN folders (benchmarks/kolektorsdd_thirds.py), three rotations:
# trained with the defaults on one part, every epoch scored on the next (--validation),
# each variant's model scored on the third, which no step saw. Summary in
# OUT_DIR/choices.md.
#   benchmarks/held_out_choices.sh OUT_DIR [SCALE]   # SCALE 0.46 by default: 500 px -> 230
source "$(dirname "$0")/scaled_kolektorsdd.sh"
"$python" "$here/benchmarks/kolektorsdd_thirds.py" "$work/small" "$work/parts" | tee "$work/parts.txt"
declare -A variants=(
  [last]="--keep last"
  [best]="--keep best"
  [thresholds]="--thresholds-on validation"
  [best-thresholds]="--keep best --thresholds-on validation"
)
mkdir -p "$out"
cd "$here"
for rotation in 1 2 3; do
  train=$rotation validation=$((rotation % 3 + 1)) test=$(((rotation + 1) % 3 + 1))
  for variant in last best thresholds best-thresholds; do
    run="$out/rotation-$rotation/$variant"
    mkdir -p "$run"
    read -r -a options <<< "${variants[$variant]}"
    "$python" -m psicbatch train "$work/parts/$train" --validation "$work/parts/$validation" \
        "${options[@]}" --out "$work/model.pt" --overwrite 2>&1 | grep -v '━' \
        | sed "s|$work|WORK|g; s|$here/||g" > "$run/train.txt"
    "$python" -m psicbatch info "$work/model.pt" --json | sed "s|$work|WORK|g" > "$run/model.json"
    "$python" -m psicbatch eval "$work/model.pt" "$work/parts/$test" -o "$work/eval" -q > /dev/null
    sed "s|$work|WORK|g; s|$here/||g" "$work/eval/metrics.json" > "$run/test-metrics.json"
    echo "rotation $rotation: trained on part $train, validated on $validation, tested on $test" \
        > "$run/parts.txt"
    echo "${variants[$variant]}" > "$run/options.txt"
  done
done
"$python" "$here/benchmarks/held_out_choices.py" "$out" \
    "KolektorSDD scaled by $scale; $(paste -sd';' "$work/parts.txt" | sed 's/;/; /g')"
