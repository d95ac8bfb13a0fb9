#!/usr/bin/env bash
# LLaVA-1.5 baseline, stage 2: LoRA r=128 instruction tuning on mix665k, starting from the
# stage-1 projector (pretrain.sh); projector lr 2e-5. 8 GPUs x 16 = global batch 128.
# PROJECTOR="" trains the projector from scratch in this single stage (see alignment_free_lora.sh).
set -euo pipefail

LLM=${LLM:-lmsys/vicuna-7b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
PROJECTOR=${PROJECTOR-./checkpoints/llava-v1.5-7b-pretrain/mm_projector.safetensors}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-lora}
NUM_GPUS=${NUM_GPUS:-8}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-16}
GRAD_ACCUM=${GRAD_ACCUM:-1}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-./scripts/zero3.json}

PROJECTOR_FLAGS=()
if [[ -n "$PROJECTOR" ]]; then
    PROJECTOR_FLAGS=(--pretrain_mm_mlp_adapter "$PROJECTOR")
fi

deepspeed --num_gpus "$NUM_GPUS" llava/train/train_mem.py \
    --deepspeed "$DEEPSPEED_CONFIG" \
    --model_name_or_path "$LLM" \
    --vision_tower "$VISION_TOWER" \
    --version v1 \
    --data_path "$DATA_PATH" \
    --image_folder "$IMAGE_FOLDER" \
    --model_type llava_llama \
    --mm_projector_type mlp2x_gelu \
    "${PROJECTOR_FLAGS[@]}" \
    --mm_vision_select_layer "-2" \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --lora_enable True \
    --lora_r 128 \
    --lora_alpha 256 \
    --mm_projector_lr 2e-5 \
    --image_aspect_ratio pad \
    --group_by_modality_length True \
    --bf16 True \
    --tf32 True \
    --output_dir "$OUTPUT_DIR" \
    --num_train_epochs 1 \
    --per_device_train_batch_size "$PER_DEVICE_BATCH" \
    --gradient_accumulation_steps "$GRAD_ACCUM" \
    --save_strategy steps \
    --save_steps 50000 \
    --save_total_limit 1 \
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
