#!/bin/bash
# GQA test-dev balanced: answers on every GPU of CUDA_VISIBLE_DEVICES, predictions JSON, accuracy.
# Usage: bash scripts/v1_5/eval/gqa.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

SPLIT=llava_gqa_testdev_balanced
DATA=$EVAL_DIR/gqa
GQADIR=$DATA/data

run_chunked llava.eval.model_vqa_loader "$DATA/answers/$SPLIT/$CKPT" \
    --question-file "$DATA/$SPLIT.jsonl" \
    --image-folder "$GQADIR/images"

"$PYTHON" scripts/convert_gqa_for_eval.py --src "$MERGED_FILE" --dst "$GQADIR/testdev_balanced_predictions.json" \
    --question-file "$DATA/$SPLIT.jsonl"
"$PYTHON" -m llava.eval.eval_gqa --tier testdev_balanced \
    --questions "$GQADIR/{tier}_questions.json" \
    --predictions "$GQADIR/{tier}_predictions.json" \
    --results-json "$(results_json gqa)"
