#!/bin/bash
# AI2D test: the question file and images (made once from lmms-lab/ai2d's parquet shards under
# ai2d/data/), answers, and the accuracy.
# Usage: bash scripts/v1_5/eval/ai2d.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

DATA=$EVAL_DIR/ai2d

if [[ ! -f $DATA/llava_ai2d_test.jsonl ]]; then
    "$PYTHON" -m llava.eval.question_files ai2d \
        --parquet "$DATA"/data/test-*.parquet \
        --image-dir "$DATA/images" \
        --out "$DATA/llava_ai2d_test.jsonl"
fi

run_answers llava.eval.model_vqa_loader "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava_ai2d_test.jsonl" \
    --image-folder "$DATA/images"

"$PYTHON" -m llava.eval.eval_ai2d \
    --question-file "$DATA/llava_ai2d_test.jsonl" \
    --result-file "$DATA/answers/$CKPT.jsonl" \
    --results-json "$(results_json ai2d)"
