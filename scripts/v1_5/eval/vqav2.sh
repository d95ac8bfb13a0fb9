#!/bin/bash
# VQAv2 test-dev: answers on every GPU of CUDA_VISIBLE_DEVICES, then the EvalAI upload file
# answers_upload/<split>/<ckpt>.json (score it on the EvalAI server).
# Usage: bash scripts/v1_5/eval/vqav2.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

SPLIT=llava_vqav2_mscoco_test-dev2015
DATA=$EVAL_DIR/vqav2

run_chunked llava.eval.model_vqa_loader "$DATA/answers/$SPLIT/$CKPT" \
    --question-file "$DATA/$SPLIT.jsonl" \
    --image-folder "$DATA/test2015"

"$PYTHON" scripts/convert_vqav2_for_submission.py --dir "$DATA" --split "$SPLIT" --ckpt "$CKPT"
