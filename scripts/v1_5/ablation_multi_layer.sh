#!/usr/bin/env bash
# Ablation (paper section 4): fusion injected into several layers (LoRA skips all of them).
set -euo pipefail

FUSION_LAYERS=${FUSION_LAYERS:-0,2}

OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/inverse-llava-multilayer-lora} \
    "$(dirname "$0")/fusion_finetune_lora.sh" \
    --layer_ids_to_inject "$FUSION_LAYERS" \
    --lora_layer_ids_to_skip "$FUSION_LAYERS" \
    "$@"
