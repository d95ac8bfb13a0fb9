"""Merge a LoRA run (adapter + non-LoRA trainables) into a complete, stand-alone checkpoint.

    python -m llava.train.merge --model-path runs/inverse-llava-lora \\
        --model-base lmsys/vicuna-7b-v1.5 --save-model-path runs/inverse-llava-merged

(`python scripts/merge_lora_weights.py`, LLaVA's spelling, runs the same command.)
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

import torch

from llava.cli_errors import run_command
from llava.model.builder import load_pretrained_model
from llava.train.model_card import TrainingCard, write_model_card

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def merge_lora(model_path: str, model_base: str, save_path: str, dtype: torch.dtype | None = None) -> Path:
    """Load `model_path` on top of `model_base` (LoRA merged into the base weights) and save the
    result with its tokenizer and image processor, safetensors only. Greedy outputs of the saved
    model equal those of base + adapter."""
    tokenizer, model, image_processor, _ = load_pretrained_model(
        model_path, model_base, device="cpu", dtype=dtype
    )
    out = Path(save_path)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if image_processor is not None:
        image_processor.save_pretrained(out)
        command = shlex.join(
            [
                "python",
                "scripts/merge_lora_weights.py",
                "--model-path",
                model_path,
                "--model-base",
                model_base,
                "--save-model-path",
                save_path,
            ]
        )
        card = TrainingCard(command, model_base, model.config.mm_vision_tower)
        write_model_card(out, model.config, "full", card)
    logger.info("merged %s + %s into %s", model_base, model_path, out)
    return out


def main(argv: list[str] | None = None) -> Path:
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
    return merge_lora(args.model_path, args.model_base, args.save_model_path, dtype=DTYPES[args.dtype])


if __name__ == "__main__":
    run_command(main)
