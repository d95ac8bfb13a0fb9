"""Merge a LoRA run (adapter + non-LoRA trainables) into a complete, stand-alone checkpoint."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import torch

from llava.model.builder import load_pretrained_model
from llava.train.model_card import TrainingCard, write_model_card

logger = logging.getLogger(__name__)


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
