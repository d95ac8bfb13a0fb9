#!/usr/bin/env bash
# Inverse-LLaVA as the authors trained their published 7B model (docs/method.md, "The published
# model's layer"): the `published` fusion layer in layer 0 (q, k, v), fully trained; LoRA r=128,
# alpha 256, dropout 0.05 on every other layer; frozen Vicuna-7B-v1.5 + CLIP-L/336 (last layer);
# one epoch of mix665k at lr 2e-4. Global batch 128: 8 GPUs x 16 here; the authors' reference run
# was NUM_GPUS=2 PER_DEVICE_BATCH=32 GRAD_ACCUM=2 (ZeRO-2, seed 42).
set -euo pipefail
source "$(dirname "$0")/common.sh"

DATA_PATH=${DATA_PATH:-$INSTRUCT_DATA_PATH}
IMAGE_FOLDER=${IMAGE_FOLDER:-$INSTRUCT_IMAGE_FOLDER}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/inverse-llava-published-vicuna-7b-lora}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-16}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-./scripts/zero2.json}

launch \
    "${INSTRUCT_FLAGS[@]}" \
    --model_type fusion_llama \
    --fusion_variant published \
    --mm_vision_select_layer "-1" \
    --fusion_targets 'q,k,v' \
    --layer_ids_to_inject '0' \
    --lora_dropout 0.05 \
    --seed 42 \
    --save_steps 500 \
    --save_total_limit 2 \
    "$@"
