#!/usr/bin/env bash
# The HD form of the public release's `scripts/v1_5/fusion_finetune_lora.sh` (the release ships
# no HD script; the paper's HD setting is tower layers -1 and -2 concatenated, d_v = 2048): the
# same flags (fusion_finetune_lora.sh here, verbatim but the paths) with
# `--mm_vision_select_layer "-1,-2" --mm_hidden_size 2048`. It trains the release's default
# fusion layer (`--stable_fusion False`, the `release_mlp` variant) in layers 0 and 2.
# docs/model.md says how it differs from the paper's recipe.
set -euo pipefail

export OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-fusion-lora-HD}
MM_VISION_SELECT_LAYER="-1,-2" MM_HIDDEN_SIZE=2048 exec bash "$(dirname "$0")/fusion_finetune_lora.sh" "$@"
