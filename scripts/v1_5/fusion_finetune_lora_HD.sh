#!/usr/bin/env bash
# Inverse-LLaVA-HD: as fusion_finetune_lora.sh, with the vision stream concatenating CLIP's last
# two layers (`-1,-2`, d_v = 2 x 1024 = 2048).
set -euo pipefail

OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/inverse-llava-hd-vicuna-7b-lora} \
    "$(dirname "$0")/fusion_finetune_lora.sh" \
    --mm_vision_select_layer "-1,-2" \
    "$@"
