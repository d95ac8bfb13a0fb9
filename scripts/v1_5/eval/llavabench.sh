#!/bin/bash
# LLaVA-Bench (in-the-wild): free-form answers, then the judge's reviews and relative scores.
# The judge runs only when the variable named by JUDGE_KEY_ENV holds an API key.
# Usage: bash scripts/v1_5/eval/llavabench.sh CHECKPOINT_PATH [MODEL_BASE]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

DATA=$EVAL_DIR/llava-bench-in-the-wild
JUDGE_BASE_URL=${JUDGE_BASE_URL:-https://api.openai.com/v1}
JUDGE_MODEL=${JUDGE_MODEL:-gpt-4-0314}
JUDGE_KEY_ENV=${JUDGE_KEY_ENV:-OPENAI_API_KEY}
JUDGE_RULE=${JUDGE_RULE:-}  # LLaVA's llava/eval/table/rule.json, for published-comparable scores

run_answers llava.eval.model_vqa "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/questions.jsonl" \
    --image-folder "$DATA/images"

if [[ -z ${!JUDGE_KEY_ENV:-} ]]; then
    echo "$JUDGE_KEY_ENV is not set: answers are in $DATA/answers/$CKPT.jsonl; skipping the judge" >&2
    exit 0
fi
RULE_ARGS=()
if [[ -n $JUDGE_RULE ]]; then
    RULE_ARGS=(--rule "$JUDGE_RULE")
fi
"$PYTHON" -m llava.eval.judge review \
    --question "$DATA/questions.jsonl" \
    --context "$DATA/context.jsonl" \
    --answer-list "$DATA/answers_gpt4.jsonl" "$DATA/answers/$CKPT.jsonl" \
    "${RULE_ARGS[@]}" \
    --output "$DATA/reviews/$CKPT.jsonl" \
    --base-url "$JUDGE_BASE_URL" --api-key-env "$JUDGE_KEY_ENV" --model "$JUDGE_MODEL"
"$PYTHON" -m llava.eval.judge summarize -f "$DATA/reviews/$CKPT.jsonl" --results-json "$(results_json llavabench)"
