#!/usr/bin/env bash
# The public release's `scripts/v1_5/fusion_finetune_lora.sh`, its flags verbatim (only the paths
# are variables): it trains the release's default fusion layer (`--stable_fusion False`, the
# `release_mlp` variant), in layers 0 and 2, on tower layer -2. Flags without an effect there
# (--pretrain_mm_mlp_adapter, --mm_projector_type, --mm_projector_lr, --fusion_hidden_dim,
# --fusion_dropout, --save_only) are accepted with one warning each. The paper's recipe is
# scripts/v1_5/fusion_finetune_lora.sh; docs/model.md says how the two differ.
set -euo pipefail

LLM=${LLM:-lmsys/vicuna-7b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
PRETRAIN_MM_MLP_ADAPTER=${PRETRAIN_MM_MLP_ADAPTER:-./checkpoints/llava-v1.5-13b-pretrain/mm_projector.bin}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-fusion-lora-no-activation-no-text-proj}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-./scripts/zero2.json}
# The tower layers and their width: the script's own, or HD's (fusion_finetune_lora_HD.sh).
MM_VISION_SELECT_LAYER=${MM_VISION_SELECT_LAYER:--2}
MM_HIDDEN_SIZE=${MM_HIDDEN_SIZE:-1024}

deepspeed llava/train/train_mem.py \
    --lora_enable True --lora_r 128 --lora_alpha 256 --mm_projector_lr 2e-5 \
    --deepspeed "$DEEPSPEED_CONFIG" \
    --model_name_or_path "$LLM" \
    --version v1 \
    --data_path "$DATA_PATH" \
    --image_folder "$IMAGE_FOLDER" \
    --vision_tower "$VISION_TOWER" \
    --use_mm_proj False \
    --pretrain_mm_mlp_adapter "$PRETRAIN_MM_MLP_ADAPTER" \
    --mm_projector_type mlp2x_gelu \
    --mm_vision_select_layer="$MM_VISION_SELECT_LAYER" \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --image_aspect_ratio pad \
    --group_by_modality_length True \
    --bf16 True \
    --output_dir "$OUTPUT_DIR" \
    --num_train_epochs 1 \
    --per_device_train_batch_size 32 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 1 \
    --eval_strategy "no" \
    --save_strategy "steps" \
    --save_steps 2500 \
    --save_total_limit 1 \
    --learning_rate 2e-4 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type "cosine" \
    --logging_steps 1 \
    --tf32 True \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --dataloader_num_workers 4 \
    --lazy_preprocess True \
    --report_to "${REPORT_TO:-wandb}" \
    --model_type fusion_llama \
    --use_vision_fusion True \
    --stable_fusion False \
    --mm_hidden_size "$MM_HIDDEN_SIZE" \
    --fusion_alpha 1.0 \
    --fusion_hidden_dim 128 \
    --fusion_dropout 0.1 \
    --fusion_targets 'q,k,v' \
    --lora_layer_ids_to_skip '0,2' \
    --layer_ids_to_inject '0,2' \
    --save_only False \
    "$@"
