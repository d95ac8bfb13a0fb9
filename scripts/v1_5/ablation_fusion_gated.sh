#!/usr/bin/env bash
# Ablation (paper section 4): the concatenation term times a learnable sigmoid gate.
set -euo pipefail

OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/inverse-llava-gated-lora} \
    "$(dirname "$0")/fusion_finetune_lora.sh" --fusion_variant gated "$@"
