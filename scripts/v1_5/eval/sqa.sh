#!/bin/bash
# ScienceQA-IMG (test): answers with the single-letter prompt, then Accuracy / IMG-Accuracy.
# Usage: bash scripts/v1_5/eval/sqa.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

DATA=$EVAL_DIR/scienceqa

run_answers llava.eval.model_vqa_science "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava_test_CQM-A.json" \
    --image-folder "$DATA/images/test" \
    --single-pred-prompt

"$PYTHON" -m llava.eval.eval_science_qa \
    --base-dir "$DATA" \
    --result-file "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava_test_CQM-A.json" \
    --output-file "$DATA/answers/${CKPT}_output.jsonl" \
    --output-result "$DATA/answers/${CKPT}_result.json" \
    --results-json "$(results_json sqa)"
