#!/bin/bash
# MME: answers, the eval-tool txt files (eval_tool/answers/<ckpt>/), then acc + acc+ scores.
# Usage: bash scripts/v1_5/eval/mme.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

DATA=$EVAL_DIR/MME

run_answers llava.eval.model_vqa_loader "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava_mme.jsonl" \
    --image-folder "$DATA/MME_Benchmark_release_version"

"$PYTHON" -m llava.eval.eval_mme \
    --answers-file "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/llava_mme.jsonl" \
    --mme-dir "$DATA/MME_Benchmark_release_version" \
    --output-dir "$DATA/eval_tool/answers/$CKPT" \
    --results-json "$(results_json mme)"
