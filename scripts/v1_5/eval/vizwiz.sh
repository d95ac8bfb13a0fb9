#!/bin/bash
# VizWiz test-dev: answers, then the EvalAI upload file answers_upload/<ckpt>.json.
# Usage: bash scripts/v1_5/eval/vizwiz.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

DATA=$EVAL_DIR/vizwiz

run_answers llava.eval.model_vqa_loader "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava_test.jsonl" \
    --image-folder "$DATA/test"

"$PYTHON" scripts/convert_vizwiz_for_submission.py \
    --annotation-file "$DATA/llava_test.jsonl" \
    --result-file "$DATA/answers/$CKPT.jsonl" \
    --result-upload-file "$DATA/answers_upload/$CKPT.json"
