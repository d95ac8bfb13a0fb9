"""Merge a LoRA training run into a complete checkpoint (safetensors): LLaVA's spelling of
`python -m llava.train.merge`.

    python scripts/merge_lora_weights.py --model-path runs/inverse-llava-lora \\
        --model-base lmsys/vicuna-7b-v1.5 --save-model-path runs/inverse-llava-merged
"""

from llava.cli_errors import run_command
from llava.train.merge import main

if __name__ == "__main__":
    run_command(main)
