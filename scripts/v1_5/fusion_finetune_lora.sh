#!/usr/bin/env bash
# Inverse-LLaVA (the paper's recipe, docs/method.md): one stage of instruction tuning on
# LLaVA-v1.5-mix665k, no alignment pre-training. Frozen Vicuna-7B + CLIP-L/336; fusion in layer 0
# (q, k, v) fully trained; LoRA r=128 on every other layer. 8 GPUs x 32 = global batch 256.
# `--fusion_hidden_dim` is not passed: it only applies to the `mlp` variant (the paper's concat
# layer has no hidden layer), and the trainer rejects it for the others.
set -euo pipefail
source "$(dirname "$0")/common.sh"

DATA_PATH=${DATA_PATH:-$INSTRUCT_DATA_PATH}
IMAGE_FOLDER=${IMAGE_FOLDER:-$INSTRUCT_IMAGE_FOLDER}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/inverse-llava-vicuna-7b-lora}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-32}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-./scripts/zero2.json}

launch \
    "${INSTRUCT_FLAGS[@]}" \
    --model_type fusion_llama \
    --mm_vision_select_layer "-1" \
    --fusion_alpha 1.0 \
    --fusion_dropout 0.1 \
    --fusion_targets 'q,k,v' \
    --layer_ids_to_inject '0' \
    --lora_layer_ids_to_skip '0' \
    --save_steps 500 \
    --save_total_limit 2 \
    "$@"
