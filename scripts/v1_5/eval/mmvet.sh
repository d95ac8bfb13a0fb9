#!/bin/bash
# MM-Vet: free-form answers, then results/<ckpt>.json for MM-Vet's GPT-4 grader.
# Usage: bash scripts/v1_5/eval/mmvet.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

DATA=$EVAL_DIR/mm-vet

run_answers llava.eval.model_vqa "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava-mm-vet.jsonl" \
    --image-folder "$DATA/images"

"$PYTHON" scripts/convert_mmvet_for_eval.py --src "$DATA/answers/$CKPT.jsonl" --dst "$DATA/results/$CKPT.json" \
    --question-file "$DATA/llava-mm-vet.jsonl"
echo "grade $DATA/results/$CKPT.json with MM-Vet's grader (https://github.com/yuweihao/MM-Vet)"
