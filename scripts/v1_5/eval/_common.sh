# Shared by scripts/v1_5/eval/<bench>.sh: source it, never run it.
# Paths follow LLaVA's layout under playground/data/eval/ (llava/eval/benchmarks.py lists them).
# Environment overrides: EVAL_DIR, RESULTS_DIR, CONV_MODE, PYTHON, CUDA_VISIBLE_DEVICES.

set -euo pipefail

EVAL_DIR=${EVAL_DIR:-./playground/data/eval}
RESULTS_DIR=${RESULTS_DIR:-$EVAL_DIR/results}
CONV_MODE=${CONV_MODE:-vicuna_v1}
PYTHON=${PYTHON:-python}

# parse_model_args CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
# Sets MODEL_PATH, CKPT (the checkpoint folder's name), MODEL_BASE_ARGS and RUNNER_ARGS: the
# flags from the first one starting with "-" on, which go to the answer runner last (a later
# flag wins), e.g. `bash mme.sh CKPT BASE --batch-size 8`.
parse_model_args() {
    if [[ $# -lt 1 || -z $1 || $1 == -* ]]; then
        echo "usage: bash $0 CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]" >&2
        exit 2
    fi
    MODEL_PATH=$1
    CKPT=$(basename "${MODEL_PATH%/}")
    shift
    MODEL_BASE_ARGS=()
    if [[ $# -ge 1 && $1 != -* ]]; then
        if [[ -n $1 ]]; then
            MODEL_BASE_ARGS=(--model-base "$1")
        fi
        shift
    fi
    RUNNER_ARGS=("$@")
}

# results_json BENCH: where a scorer writes the headline numbers llava.eval.report reads.
results_json() {
    echo "$RESULTS_DIR/$CKPT/$1.json"
}

# run_answers RUNNER_MODULE ANSWERS_FILE [runner flags...]: greedy answers in one process; the
# flags given to the script (RUNNER_ARGS) come last.
run_answers() {
    local runner=$1 answers_file=$2
    shift 2
    mkdir -p "$(dirname "$answers_file")"
    "$PYTHON" -m "$runner" \
        --model-path "$MODEL_PATH" "${MODEL_BASE_ARGS[@]}" \
        --answers-file "$answers_file" \
        --temperature 0 \
        --conv-mode "$CONV_MODE" \
        "$@" "${RUNNER_ARGS[@]}"
}

# run_chunked RUNNER_MODULE ANSWERS_DIR [runner flags...]
# One background process per GPU of CUDA_VISIBLE_DEVICES (default "0"), each answering its
# contiguous chunk into ANSWERS_DIR/{K}_{i}.jsonl; after all succeed, the chunks are
# concatenated in index order into ANSWERS_DIR/merge.jsonl, whose path goes into MERGED_FILE.
run_chunked() {
    local runner=$1 answers_dir=$2
    shift 2
    local -a gpus pids=()
    IFS=',' read -ra gpus <<< "${CUDA_VISIBLE_DEVICES:-0}"
    local chunks=${#gpus[@]} idx pid failed=0
    for idx in $(seq 0 $((chunks - 1))); do
        CUDA_VISIBLE_DEVICES=${gpus[$idx]} run_answers "$runner" "$answers_dir/${chunks}_${idx}.jsonl" \
            --num-chunks "$chunks" --chunk-idx "$idx" "$@" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
    if [[ $failed -ne 0 ]]; then
        echo "at least one chunk of $answers_dir failed; not merging" >&2
        exit 1
    fi
    MERGED_FILE=$("$PYTHON" -m llava.eval.benchmarks merge --answers-dir "$answers_dir" --num-chunks "$chunks")
}

# run_mmbench DATA_DIR SPLIT BENCH [runner flags...]: MMBench / MMBench-CN answers, the upload
# sheet, and the local circular score of the dev split.
run_mmbench() {
    local data=$1 split=$2 bench=$3
    shift 3
    local answers=$data/answers/$split/$CKPT.jsonl
    run_answers llava.eval.model_vqa_mmbench "$answers" \
        --question-file "$data/$split.tsv" \
        --single-pred-prompt "$@"
    "$PYTHON" scripts/convert_mmbench_for_submission.py \
        --annotation-file "$data/$split.tsv" \
        --result-dir "$data/answers/$split" \
        --upload-dir "$data/answers_upload/$split" \
        --experiment "$CKPT"
    "$PYTHON" -m llava.eval.eval_mmbench \
        --annotation-file "$data/$split.tsv" \
        --result-file "$answers" \
        --benchmark "$bench" \
        --results-json "$(results_json "$bench")"
}
