#!/usr/bin/env bash
# Ablation (paper section 4): addition instead of concatenation in the fusion term.
set -euo pipefail

OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/inverse-llava-add-lora} \
    "$(dirname "$0")/fusion_finetune_lora.sh" --fusion_variant add "$@"
