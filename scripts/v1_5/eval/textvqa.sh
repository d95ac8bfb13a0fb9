#!/bin/bash
# TextVQA val (with reference OCR tokens): answers, then VQA accuracy.
# Usage: bash scripts/v1_5/eval/textvqa.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

DATA=$EVAL_DIR/textvqa

run_answers llava.eval.model_vqa_loader "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava_textvqa_val_v051_ocr.jsonl" \
    --image-folder "$DATA/train_images"

"$PYTHON" -m llava.eval.eval_textvqa \
    --annotation-file "$DATA/TextVQA_0.5.1_val.json" \
    --result-file "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava_textvqa_val_v051_ocr.jsonl" \
    --results-json "$(results_json textvqa)"
