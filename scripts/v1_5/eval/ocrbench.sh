#!/bin/bash
# OCRBench: the question file (made once from OCRBench.json), answers, and the final score of 1000.
# Usage: bash scripts/v1_5/eval/ocrbench.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

DATA=$EVAL_DIR/ocrbench

if [[ ! -f $DATA/llava_ocrbench.jsonl ]]; then
    "$PYTHON" -m llava.eval.question_files ocrbench \
        --annotation-file "$DATA/OCRBench.json" \
        --out "$DATA/llava_ocrbench.jsonl"
fi

run_answers llava.eval.model_vqa_loader "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava_ocrbench.jsonl" \
    --image-folder "$DATA/OCRBench_Images"

"$PYTHON" -m llava.eval.eval_ocrbench \
    --annotation-file "$DATA/OCRBench.json" \
    --result-file "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava_ocrbench.jsonl" \
    --results-json "$(results_json ocrbench)"
