#!/bin/bash
# VQAv2 val, scored locally: the question file (made once from the official questions file),
# answers on every GPU of CUDA_VISIBLE_DEVICES, and the official VQA accuracy.
# Usage: bash scripts/v1_5/eval/vqav2_val.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

SPLIT=llava_vqav2_mscoco_val2014
DATA=$EVAL_DIR/vqav2

if [[ ! -f $DATA/$SPLIT.jsonl ]]; then
    "$PYTHON" -m llava.eval.question_files vqav2_val \
        --questions "$DATA/v2_OpenEnded_mscoco_val2014_questions.json" \
        --out "$DATA/$SPLIT.jsonl"
fi

run_chunked llava.eval.model_vqa_loader "$DATA/answers/$SPLIT/$CKPT" \
    --question-file "$DATA/$SPLIT.jsonl" \
    --image-folder "$DATA/val2014"

"$PYTHON" -m llava.eval.eval_vqav2 \
    --annotation-file "$DATA/v2_mscoco_val2014_annotations.json" \
    --result-file "$MERGED_FILE" \
    --question-file "$DATA/$SPLIT.jsonl" \
    --results-json "$(results_json vqav2_val)"
