#!/usr/bin/env bash
# Inverse-LLaVA (the paper's recipe, docs/method.md): one stage of instruction tuning on
# LLaVA-v1.5-mix665k, no alignment pre-training. Frozen Vicuna-7B + CLIP-L/336; fusion in layer 0
# (q, k, v) fully trained; LoRA r=128 on every other layer. 8 GPUs x 32 = global batch 256.
# `--fusion_hidden_dim` is not passed: it only applies to the `mlp` variant (the paper's concat
# layer has no hidden layer), and the trainer rejects it for the others.
set -euo pipefail

LLM=${LLM:-lmsys/vicuna-7b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/inverse-llava-vicuna-7b-lora}
NUM_GPUS=${NUM_GPUS:-8}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-32}
GRAD_ACCUM=${GRAD_ACCUM:-1}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-./scripts/zero2.json}

deepspeed --num_gpus "$NUM_GPUS" llava/train/train_mem.py \
    --deepspeed "$DEEPSPEED_CONFIG" \
    --model_name_or_path "$LLM" \
    --vision_tower "$VISION_TOWER" \
    --version v1 \
    --data_path "$DATA_PATH" \
    --image_folder "$IMAGE_FOLDER" \
    --model_type fusion_llama \
    --use_vision_fusion True \
    --use_mm_proj False \
    --mm_hidden_size 1024 \
    --mm_vision_select_layer "-1" \
    --fusion_alpha 1.0 \
    --fusion_dropout 0.1 \
    --fusion_targets 'q,k,v' \
    --layer_ids_to_inject '0' \
    --lora_enable True \
    --lora_r 128 \
    --lora_alpha 256 \
    --lora_layer_ids_to_skip '0' \
    --image_aspect_ratio pad \
    --group_by_modality_length True \
    --bf16 True \
    --tf32 True \
    --output_dir "$OUTPUT_DIR" \
    --num_train_epochs 1 \
    --per_device_train_batch_size "$PER_DEVICE_BATCH" \
    --gradient_accumulation_steps "$GRAD_ACCUM" \
    --save_strategy steps \
    --save_steps 500 \
    --save_total_limit 2 \
    --learning_rate 2e-4 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type cosine \
    --logging_steps 1 \
    --model_max_length 2048 \
    --activation_checkpointing True \
    --dataloader_num_workers 4 \
    --lazy_preprocess True \
    --report_to "${REPORT_TO:-wandb}" \
    "$@"
