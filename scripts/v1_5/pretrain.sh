#!/usr/bin/env bash
# LLaVA-1.5 baseline, stage 1 (alignment): train only the mlp2x_gelu projector on LCS-558K
# captions with the `plain` template. 8 GPUs x 32 = global batch 256, lr 1e-3.
set -euo pipefail
source "$(dirname "$0")/common.sh"

DATA_PATH=${DATA_PATH:-./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data/LLaVA-Pretrain/images}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-pretrain}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-32}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-./scripts/zero2.json}

launch \
    --version plain \
    --model_type llava_llama \
    --mm_projector_type mlp2x_gelu \
    --tune_mm_mlp_adapter True \
    --mm_vision_select_layer "-2" \
    --learning_rate 1e-3 \
    --save_steps 24000 \
    --save_total_limit 1 \
    "$@"
