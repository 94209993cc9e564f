#!/usr/bin/env bash
# The other choice for defective images without masks: leave them out of training. After
# benchmarks/few_masks.sh OUT_DIR, each fold of its half/ and quarter/ runs is trained
# again (psicbatch train, the same defaults and input size) without the defective images
# that have no mask, and scored (psicbatch eval) on the same test images, into
# OUT_DIR/half-dropped and OUT_DIR/quarter-dropped (a rerun skips what is there already);
# OUT_DIR/summary.md is then rewritten with them.
#   benchmarks/few_masks_dropped.sh OUT_DIR [SCALE]   # SCALE as given to few_masks.sh
source "$(dirname "$0")/scaled_kolektorsdd.sh"
source "$here/benchmarks/train_and_score.sh"
"$python" "$here/benchmarks/kolektorsdd_review.py" "$work/small" "$work"
cd "$here"
size=$("$python" -c "import json, sys; print('x'.join(map(str, json.load(open(sys.argv[1]))['options']['input_size'])))" "$out/half/cv.json")
for review in half quarter; do
    for fold in 1 2 3; do
        folds="$work/$review-fold$fold"
        "$python" "$here/benchmarks/fold_folders.py" "$work/$review" "$out/$review/splits.json" \
            "$fold" "$folds/train" "$folds/test"
        result="$out/$review-dropped/fold$fold"
        train_once "$result/model.pt" "$folds/train" --input-size "$size"
        score_once "$result/model.pt" "$folds/test" "$result"
    done
done
"$python" "$here/benchmarks/runs_summary.py" "$out" > "$out/summary.md"
cat "$out/summary.md"
