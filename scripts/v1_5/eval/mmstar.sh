#!/bin/bash
# MMStar: the question file and images (made once from Lin-Chen/MMStar's mmstar.parquet),
# answers, and the accuracies (overall, 6 core and 18 l2 categories).
# Usage: bash scripts/v1_5/eval/mmstar.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

DATA=$EVAL_DIR/mmstar

if [[ ! -f $DATA/llava_mmstar.jsonl ]]; then
    "$PYTHON" -m llava.eval.question_files mmstar \
        --parquet "$DATA/mmstar.parquet" \
        --image-dir "$DATA/images" \
        --out "$DATA/llava_mmstar.jsonl"
fi

run_answers llava.eval.model_vqa_loader "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava_mmstar.jsonl" \
    --image-folder "$DATA/images"

"$PYTHON" -m llava.eval.eval_mmstar \
    --question-file "$DATA/llava_mmstar.jsonl" \
    --result-file "$DATA/answers/$CKPT.jsonl" \
    --results-json "$(results_json mmstar)"
