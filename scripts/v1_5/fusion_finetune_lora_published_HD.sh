#!/usr/bin/env bash
# The published recipe's HD setting: as fusion_finetune_lora_published.sh, with the vision stream
# concatenating CLIP's penultimate and last layers in the authors' order (`-2,-1`, d_v = 2048).
set -euo pipefail

OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/inverse-llava-published-hd-vicuna-7b-lora} \
    "$(dirname "$0")/fusion_finetune_lora_published.sh" \
    --mm_vision_select_layer "-2,-1" \
    "$@"
