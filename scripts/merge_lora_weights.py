"""Merge a LoRA training run into a complete checkpoint (safetensors).

    python scripts/merge_lora_weights.py --model-path runs/inverse-llava-lora \
        --model-base lmsys/vicuna-7b-v1.5 --save-model-path runs/inverse-llava-merged
"""

import argparse
import logging

import torch

from llava.train.merge import merge_lora

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-path", required=True, help="the LoRA run (or one of its checkpoint-N folders)"
    )
    parser.add_argument("--model-base", required=True, help="the base LLM the run started from")
    parser.add_argument("--save-model-path", required=True)
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the saved weights"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    merge_lora(args.model_path, args.model_base, args.save_model_path, dtype=DTYPES[args.dtype])


if __name__ == "__main__":
    main()
