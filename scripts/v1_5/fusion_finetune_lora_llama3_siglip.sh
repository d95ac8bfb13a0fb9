#!/usr/bin/env bash
# Inverse-LLaVA on Llama-3-8B-Instruct + SigLIP-so400m/14 at 384 px (729 patches, no CLS, d_v =
# 1152): the recipe of fusion_finetune_lora.sh (one stage on mix665k, fusion in layer 0 fully
# trained, LoRA r=128 elsewhere, 8 GPUs x 32) with the llama_3 template. The LLM family is read
# from the LLM's config; --model_type fusion_llama chooses the method for any family. Llama-3 has
# no pad token: its reserved <|reserved_special_token_0|> pads (no token is added).
set -euo pipefail

LLM=${LLM:-meta-llama/Meta-Llama-3-8B-Instruct}
VISION_TOWER=${VISION_TOWER:-google/siglip-so400m-patch14-384}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/inverse-llava-llama3-8b-siglip-lora}
export LLM VISION_TOWER OUTPUT_DIR

"$(dirname "$0")/fusion_finetune_lora.sh" --version llama_3 "$@"
