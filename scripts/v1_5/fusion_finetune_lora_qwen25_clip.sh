#!/usr/bin/env bash
# Inverse-LLaVA on Qwen2.5-7B-Instruct + CLIP-L/14 at 336 px: the recipe of
# fusion_finetune_lora.sh (one stage on mix665k, fusion in layer 0 fully trained, LoRA r=128
# elsewhere, 8 GPUs x 32) with the qwen_2 (ChatML) template. The LLM family is read from the
# LLM's config; --model_type fusion_llama chooses the method for any family.
set -euo pipefail

LLM=${LLM:-Qwen/Qwen2.5-7B-Instruct}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/inverse-llava-qwen2.5-7b-clip-lora}
export LLM OUTPUT_DIR

"$(dirname "$0")/fusion_finetune_lora.sh" --version qwen_2 "$@"
