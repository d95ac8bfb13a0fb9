#!/bin/bash
# LLaVA-Bench (in-the-wild): free-form answers, then the judge's reviews and relative scores.
# The judge has no default endpoint: it runs only when JUDGE_BASE_URL names one (and sends a key
# only from the variable JUDGE_KEY_ENV names). A rerun keeps the finished reviews.
# Usage: JUDGE_BASE_URL=https://api.openai.com/v1 JUDGE_KEY_ENV=OPENAI_API_KEY \
#            bash scripts/v1_5/eval/llavabench.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

DATA=$EVAL_DIR/llava-bench-in-the-wild
JUDGE_BASE_URL=${JUDGE_BASE_URL:-}
JUDGE_MODEL=${JUDGE_MODEL:-gpt-4-0314}
JUDGE_KEY_ENV=${JUDGE_KEY_ENV:-}
JUDGE_RULE=${JUDGE_RULE:-}  # LLaVA's llava/eval/table/rule.json, for published-comparable scores

run_answers llava.eval.model_vqa "$DATA/answers/$CKPT.jsonl" \
    --question-file "$DATA/questions.jsonl" \
    --image-folder "$DATA/images"

if [[ -z $JUDGE_BASE_URL ]]; then
    echo "JUDGE_BASE_URL is not set: answers are in $DATA/answers/$CKPT.jsonl; skipping the judge" >&2
    exit 0
fi
JUDGE_ARGS=(--base-url "$JUDGE_BASE_URL" --model "$JUDGE_MODEL")
if [[ -n $JUDGE_KEY_ENV ]]; then
    JUDGE_ARGS+=(--api-key-env "$JUDGE_KEY_ENV")
fi
if [[ -n $JUDGE_RULE ]]; then
    JUDGE_ARGS+=(--rule "$JUDGE_RULE")
fi
"$PYTHON" -m llava.eval.judge review \
    --question "$DATA/questions.jsonl" \
    --context "$DATA/context.jsonl" \
    --answer-list "$DATA/answers_gpt4.jsonl" "$DATA/answers/$CKPT.jsonl" \
    --output "$DATA/reviews/$CKPT.jsonl" \
    "${JUDGE_ARGS[@]}"
"$PYTHON" -m llava.eval.judge summarize -f "$DATA/reviews/$CKPT.jsonl" -q "$DATA/questions.jsonl" \
    --results-json "$(results_json llavabench)"
