#!/usr/bin/env bash
# A line's model and newly labelled images: fine-tune it (train --init) or train again
# from scratch? KolektorSDD (scaled by SCALE, as benchmarks/small_images.sh scales it) in
# three parts of whole kosNN folders (benchmarks/kolektorsdd_thirds.py). Three times, each
# part once the test set: the line's first model trains on the next part ("first"), the
# third part's images then arrive, and on both parts together each of these trains with
# the training defaults unless said, to be scored on the test part:
#   retrained        from random weights (what the line would do without --init);
#   tuned            from the first model (--init), 40 + 30 epochs;
#   tuned-short      from it, 10 + 10 epochs;
#   tuned-short-slow from it, 10 + 10 epochs at a fifth of the learning rates;
#   tuned-new        from it, 10 + 10 epochs on the new part alone;
#   retrained-short  from random weights, 10 + 10 epochs (tuned-short's cost);
#   retrained-long   from random weights, 80 + 60 epochs (first's and tuned's together).
# Each run's rotation N lands in OUT_DIR/RUN/foldN (model.pt, model.json, evaluation/);
# OUT_DIR/summary.md sets the runs side by side. A rerun into the same OUT_DIR skips the
# runs already scored there (the parts are the same every time).
#   benchmarks/fine_tuning.sh OUT_DIR [SCALE]     # SCALE 0.46 by default: 500 px -> 230
source "$(dirname "$0")/scaled_kolektorsdd.sh"
source "$here/benchmarks/train_and_score.sh"
"$python" "$here/benchmarks/kolektorsdd_thirds.py" "$work/small" "$work/parts"
cd "$here"
runs=(first retrained tuned tuned-short tuned-short-slow tuned-new retrained-short
    retrained-long)
train_and_score() {  # RUN ROTATION DATA TEST [TRAIN_OPTION ...]
    local result="$out/$1/fold$2" data=$3 test=$4
    shift 4
    train_once "$result/model.pt" "$data" "$@"
    score_once "$result/model.pt" "$test" "$result"
}
for rotation in 1 2 3; do
    test="$work/parts/$rotation"
    first="$work/parts/$((rotation % 3 + 1))"
    new="$work/parts/$(((rotation + 1) % 3 + 1))"
    both="$work/both$rotation"
    mkdir -p "$both"
    ln -s "$first"/* "$new"/* "$both/"
    start="$out/first/fold$rotation/model.pt"
    short=(--init "$start" --seg-epochs 10 --cls-epochs 10)
    train_and_score first "$rotation" "$first" "$test"
    train_and_score retrained "$rotation" "$both" "$test"
    train_and_score tuned "$rotation" "$both" "$test" --init "$start"
    train_and_score tuned-short "$rotation" "$both" "$test" "${short[@]}"
    train_and_score tuned-short-slow "$rotation" "$both" "$test" "${short[@]}" \
        --seg-lr 0.02 --cls-lr 0.01
    train_and_score tuned-new "$rotation" "$new" "$test" "${short[@]}"
    train_and_score retrained-short "$rotation" "$both" "$test" --seg-epochs 10 --cls-epochs 10
    train_and_score retrained-long "$rotation" "$both" "$test" --seg-epochs 80 --cls-epochs 60
done
"$python" "$here/benchmarks/runs_summary.py" "$out" "${runs[@]}" > "$out/summary.md"
cat "$out/summary.md"
