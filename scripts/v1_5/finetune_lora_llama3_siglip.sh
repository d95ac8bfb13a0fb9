#!/usr/bin/env bash
# The LLaVA-1.5 baseline on Llama-3-8B-Instruct + SigLIP-so400m/14 at 384 px (d_v = 1152): the
# recipe of finetune_lora.sh (stage 2, LoRA r=128, 8 GPUs x 16) with the llama_3 template, from
# the stage-1 projector of the same LLM and tower:
#   LLM=meta-llama/Meta-Llama-3-8B-Instruct VISION_TOWER=google/siglip-so400m-patch14-384 \
#   OUTPUT_DIR=./checkpoints/llava-llama3-8b-siglip-pretrain bash scripts/v1_5/pretrain.sh
# PROJECTOR="" trains the projector from scratch in this single stage instead.
set -euo pipefail

LLM=${LLM:-meta-llama/Meta-Llama-3-8B-Instruct}
VISION_TOWER=${VISION_TOWER:-google/siglip-so400m-patch14-384}
PROJECTOR=${PROJECTOR-./checkpoints/llava-llama3-8b-siglip-pretrain/mm_projector.safetensors}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-llama3-8b-siglip-lora}
export LLM VISION_TOWER PROJECTOR OUTPUT_DIR

"$(dirname "$0")/finetune_lora.sh" --version llama_3 "$@"
