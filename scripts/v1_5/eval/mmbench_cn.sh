#!/bin/bash
# MMBench-CN (dev): as mmbench.sh, with the Chinese prompt (--lang cn).
# Usage: bash scripts/v1_5/eval/mmbench_cn.sh CHECKPOINT_PATH [MODEL_BASE] [RUNNER_FLAG...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_model_args "$@"

SPLIT=mmbench_dev_cn_20231003
DATA=$EVAL_DIR/mmbench_cn

run_mmbench "$DATA" "$SPLIT" mmbench_cn --lang cn
