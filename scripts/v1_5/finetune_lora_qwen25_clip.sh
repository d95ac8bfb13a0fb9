#!/usr/bin/env bash
# The LLaVA-1.5 baseline on Qwen2.5-7B-Instruct + CLIP-L/14 at 336 px: the recipe of
# finetune_lora.sh (stage 2, LoRA r=128, 8 GPUs x 16) with the qwen_2 (ChatML) template, from the
# stage-1 projector of the same LLM and tower:
#   LLM=Qwen/Qwen2.5-7B-Instruct OUTPUT_DIR=./checkpoints/llava-qwen2.5-7b-clip-pretrain \
#   bash scripts/v1_5/pretrain.sh
# PROJECTOR="" trains the projector from scratch in this single stage instead.
set -euo pipefail

LLM=${LLM:-Qwen/Qwen2.5-7B-Instruct}
PROJECTOR=${PROJECTOR-./checkpoints/llava-qwen2.5-7b-clip-pretrain/mm_projector.safetensors}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-qwen2.5-7b-clip-lora}
export LLM PROJECTOR OUTPUT_DIR

"$(dirname "$0")/finetune_lora.sh" --version qwen_2 "$@"
