#!/bin/bash
# SEED-Bench: answers on every GPU of CUDA_VISIBLE_DEVICES, accuracies, and the upload jsonl.
# Usage: bash scripts/v1_5/eval/seed.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

DATA=$EVAL_DIR/seed_bench

run_chunked llava.eval.model_vqa_loader "$DATA/answers/$CKPT" \
    --question-file "$DATA/llava-seed-bench.jsonl" \
    --image-folder "$DATA"

"$PYTHON" scripts/convert_seed_for_submission.py \
    --annotation-file "$DATA/SEED-Bench.json" \
    --result-file "$MERGED_FILE" \
    --question-file "$DATA/llava-seed-bench.jsonl" \
    --result-upload-file "$DATA/answers_upload/$CKPT.jsonl" \
    --results-json "$(results_json seed)"
