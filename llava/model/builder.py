"""Loading models: from pre-trained backbones (training) and from checkpoints (inference).

What a checkpoint is, is decided from its own files, never from its folder's name (nor from
`model_name` or config.json's `architectures`): `llava.model.formats` holds one module per
format (this project's, LLaVA-1.5's, transformers' llava, the authors' first release and their
2026 bundle) and the dispatcher that picks the one that claims the folder;
`load_pretrained_model` asks it, then places the model. See docs/checkpoints.md for every format.

New models from backbones are built by `llava.model.from_backbones` (re-exported here); LLaVA's
placement keywords are interpreted by `llava.model.placement`.

What a load guarantees (see docs/model.md, "Loading: what is checked"): every parameter holds a
value read from a file, except those `build_from_backbones` reports as newly initialised; a LoRA
folder of a multimodal model must hold its non-LoRA trainables; every tensor copied by hand is
shape-checked; locations are resolved by `llava.model.paths.resolve_location`.
"""

from __future__ import annotations

import logging

import torch

from llava.model.checkpoint_parts import MM_PROJECTOR, NON_LORA_TRAINABLES
from llava.model.formats import LoadOptions, ModelBaseError, load_checkpoint
from llava.model.formats.base import local_folder
from llava.model.from_backbones import build_from_backbones, multimodal_config_from_backbones
from llava.model.load_report import LoadReport
from llava.model.placement import (
    attention_implementation,
    default_dtype,
    quantization_config,
    resolve_device,
)

__all__ = [
    "MM_PROJECTOR",
    "NON_LORA_TRAINABLES",
    "LoadReport",
    "ModelBaseError",
    "build_from_backbones",
    "load_pretrained_model",
    "multimodal_config_from_backbones",
]

logger = logging.getLogger(__name__)


def load_pretrained_model(
    model_path: str,
    model_base: str | None = None,
    model_name: str | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map="auto",
    device: str | None = "cuda",
    use_flash_attn: bool = False,
    *,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
):
    """Load a checkpoint for inference, with LLaVA's signature (and this project's keywords).

    Args:
        model_path: a complete/merged checkpoint, a LoRA run's output, or a stage-1 projector
            folder, in any format of `llava.model.formats`, local or on a hub.
        model_base: the base LLM for LoRA and projector-only checkpoints.
        model_name: LLaVA's name argument; logged, never used: the files decide.
        device_map, device: see `llava.model.placement.resolve_device`; `device=None` means CUDA
            when available, else the CPU. `device="cuda"` (LLaVA's default) without CUDA is an error.
        use_flash_attn: LLaVA's switch for `attn_implementation="flash_attention_2"`.
        dtype: default fp32 on CPU, bf16/fp16 on GPU.

    Returns:
        `(tokenizer, model, image_processor, context_len)`; `image_processor` is None for a
        text-only Llama checkpoint.
    """
    if model_name is not None and not isinstance(model_name, str):
        raise TypeError(
            f"the third argument is LLaVA's model_name (a string), got {model_name!r}; pass load_8bit= "
            "and the other options by keyword"
        )
    if model_name is not None:
        logger.info("model_name %r: not used; the checkpoint's files decide how it loads", model_name)
    target = resolve_device(device, device_map)
    options = LoadOptions(
        label=model_path,
        dtype=dtype or default_dtype(target),
        attn_implementation=attention_implementation(use_flash_attn, attn_implementation),
        quantization=quantization_config(load_8bit, load_4bit, target),
    )
    checkpoint_format, loaded = load_checkpoint(local_folder(model_path, "model path"), model_base, options)
    logger.info("loaded %s (%s format); %s", model_path, checkpoint_format.name, loaded.summary)
    return _ready(loaded.model, loaded.tokenizer, loaded.image_processor, None if loaded.placed else target)


def _ready(model, tokenizer, image_processor, device: str | None):
    """LLaVA's four results, the model in eval mode on `device` (None: where it is)."""
    if device is not None:
        model.to(device=device)
    model.eval()
    config = model.config
    context_len = getattr(config, "max_sequence_length", None) or config.max_position_embeddings
    return tokenizer, model, image_processor, context_len
