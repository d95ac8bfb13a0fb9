#!/usr/bin/env bash
# Control for Inverse-LLaVA: the LLaVA-1.5 architecture trained like Inverse-LLaVA, in one stage
# without alignment pre-training (the projector starts from scratch), at the same global batch
# (8 GPUs x 32 = 256) and on the same data.
set -euo pipefail

PROJECTOR="" \
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-alignment-free-lora} \
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-32} \
    "$(dirname "$0")/finetune_lora.sh" "$@"
