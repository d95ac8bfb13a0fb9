"""Helpers of the text-path export tests: tiny complete checkpoints with trained-looking fusion
weights, text-only logits, and how far the export's float32 logits may land from the fused model's."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer

from llava.model.builder import build_from_backbones
from llava.model.vision_tower import load_image_processor
from tests import tolerances

PROMPTS = ["What is in the image? A red circle.", "How many squares are there? two"]


def fusion_checkpoint(folder: Path, backbones: tuple[str, str], **fields) -> Path:
    """A complete Inverse-LLaVA checkpoint (weights, tokenizer, image processor) in `folder`
    whose fusion parameters are seeded draws: the paper's and the published layers' initial
    output weights are (near) zero, and such a branch would leave the text path the LLM's."""
    llm, vision = backbones
    model, report = build_from_backbones("fusion_llama", llm, vision, **fields)
    generator = torch.Generator().manual_seed(0)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in report.missing:
            params[name].copy_(torch.randn(params[name].shape, generator=generator) * 0.2)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(llm).save_pretrained(folder)
    load_image_processor(vision).save_pretrained(folder)
    return folder


@torch.no_grad()
def text_logits(model, tokenizer) -> torch.Tensor:
    """Logits `[2, T, V]` of a right-padded batch of two text-only prompts, zeroed at padding."""
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return logits * batch.attention_mask.unsqueeze(-1)


def fold_tolerance(reference: torch.Tensor, plain_config, vision_width: int) -> float:
    """How far the export's float32 logits can land from the fused model's on outputs the size of
    `reference`. Both compute the same function: at each fusion layer the fused model adds
    s A (M x) to W x (two more contractions, over d_h and over the vision width d_v), the export
    applies W + s A M, formed once in float64 and rounded to float32 (one rounding per weight,
    below one contraction's reordering error); every other contraction is the same. So
    `tolerances.forward` over the LLM's widest contraction and depth (`plain_config`, the
    exported family config) with the branch's two contractions added bounds the difference."""
    width, depth = tolerances.network(plain_config)
    return tolerances.forward(max(width, vision_width), depth + 2, reference.abs().max().item())
