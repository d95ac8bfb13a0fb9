#!/bin/bash
# MMBench (English, dev): answers, the upload sheet for the server, and the local circular score.
# Usage: bash scripts/v1_5/eval/mmbench.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

SPLIT=mmbench_dev_20230712
DATA=$EVAL_DIR/mmbench

run_mmbench "$DATA" "$SPLIT" mmbench
