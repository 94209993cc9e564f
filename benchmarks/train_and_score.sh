# Sourced by the benchmarks that train models and score them on test images
# (fine_tuning.sh, lighting_drift.sh, few_masks_dropped.sh), after scaled_kolektorsdd.sh
# (which sets python). Each step is skipped where its output is there already, so a
# rerun into the same OUT_DIR goes on where an earlier one stopped.

train_once() {  # MODEL DATA [TRAIN_OPTION ...]: train MODEL on DATA unless it exists
    local model=$1 data=$2
    shift 2
    [[ -f "$model" ]] && return
    mkdir -p "$(dirname "$model")"
    "$python" -m psicbatch train "$data" --quiet --out "$model" "$@"
}

score_once() {  # MODEL TEST RESULT: RESULT/model.json (the model) and RESULT/evaluation/
    local model=$1 test=$2 result=$3
    [[ -f "$result/evaluation/metrics.json" ]] && return
    mkdir -p "$result"
    "$python" -m psicbatch info "$model" --json > "$result/model.json"
    "$python" -m psicbatch eval "$model" "$test" --quiet --out "$result/evaluation"
}
