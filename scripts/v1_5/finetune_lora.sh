#!/usr/bin/env bash
# LLaVA-1.5 baseline, stage 2: LoRA r=128 instruction tuning on mix665k, starting from the
# stage-1 projector (pretrain.sh); projector lr 2e-5. 8 GPUs x 16 = global batch 128.
# PROJECTOR="" trains the projector from scratch in this single stage (see alignment_free_lora.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"

DATA_PATH=${DATA_PATH:-$INSTRUCT_DATA_PATH}
IMAGE_FOLDER=${IMAGE_FOLDER:-$INSTRUCT_IMAGE_FOLDER}
PROJECTOR=${PROJECTOR-./checkpoints/llava-v1.5-7b-pretrain/mm_projector.safetensors}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-lora}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-16}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-./scripts/zero3.json}

PROJECTOR_FLAGS=()
if [[ -n "$PROJECTOR" ]]; then
    PROJECTOR_FLAGS=(--pretrain_mm_mlp_adapter "$PROJECTOR")
fi

launch \
    "${INSTRUCT_FLAGS[@]}" \
    --model_type llava_llama \
    --mm_projector_type mlp2x_gelu \
    "${PROJECTOR_FLAGS[@]}" \
    --mm_vision_select_layer "-2" \
    --mm_projector_lr 2e-5 \
    --save_steps 50000 \
    --save_total_limit 1 \
    "$@"
