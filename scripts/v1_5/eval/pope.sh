#!/bin/bash
# POPE (adversarial, popular, random): answers, then per-category P/R/F1 and the mean F1.
# Usage: bash scripts/v1_5/eval/pope.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

DATA=$EVAL_DIR/pope

run_answers llava.eval.model_vqa_loader "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava_pope_test.jsonl" \
    --image-folder "$DATA/val2014"

"$PYTHON" -m llava.eval.eval_pope \
    --annotation-dir "$DATA/coco" \
    --question-file "$DATA/llava_pope_test.jsonl" \
    --result-file "$DATA/answers/$CKPT.jsonl" \
    --results-json "$(results_json pope)"
