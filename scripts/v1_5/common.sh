# Sourced by pretrain.sh, finetune_lora.sh and fusion_finetune_lora.sh: the defaults and flags every
# recipe shares. Each variable can be set from the environment; `launch FLAG...` starts
# llava/train/train_mem.py under DeepSpeed with the shared flags, then FLAG... (a later flag wins).
# The model is named once, by --model_type; the vision width (mm_hidden_size) is derived from the
# tower and the selected layers.

LLM=${LLM:-lmsys/vicuna-7b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
INSTRUCT_DATA_PATH=./playground/data/llava_v1_5_mix665k.json
INSTRUCT_IMAGE_FOLDER=./playground/data
NUM_GPUS=${NUM_GPUS:-8}
GRAD_ACCUM=${GRAD_ACCUM:-1}

# The instruction-tuning stage of both methods: LoRA r=128 (alpha 256) at lr 2e-4 on mix665k's
# padded images, batches grouped by modality.
INSTRUCT_FLAGS=(
    --version v1
    --lora_enable True
    --lora_r 128
    --lora_alpha 256
    --learning_rate 2e-4
    --image_aspect_ratio pad
    --group_by_modality_length True
)

launch() {
    deepspeed --num_gpus "$NUM_GPUS" llava/train/train_mem.py \
        --deepspeed "$DEEPSPEED_CONFIG" \
        --model_name_or_path "$LLM" \
        --vision_tower "$VISION_TOWER" \
        --data_path "$DATA_PATH" \
        --image_folder "$IMAGE_FOLDER" \
        --output_dir "$OUTPUT_DIR" \
        --bf16 True \
        --tf32 True \
        --num_train_epochs 1 \
        --per_device_train_batch_size "$PER_DEVICE_BATCH" \
        --gradient_accumulation_steps "$GRAD_ACCUM" \
        --save_strategy steps \
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
}
