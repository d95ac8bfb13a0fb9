"""New multimodal models from a pre-trained LLM of any supported family and a CLIP, SigLIP or
OpenCLIP tower (training starts here)."""

from __future__ import annotations

import logging

import torch
from transformers import AutoConfig

from llava.model.checkpoint_parts import tower_parameter_names
from llava.model.configuration import MultimodalConfigMixin
from llava.model.fusion_llama import FusionLlamaForCausalLM
from llava.model.llava_llama import LlavaLlamaForCausalLM
from llava.model.load_report import LoadReport, from_pretrained_checked
from llava.model.paths import resolve_location
from llava.model.registry import MODEL_CLASSES, classes_for, method_of
from llava.model.vision_tower import read_vision_config
from llava.model.weights import check_folder_pickles

logger = logging.getLogger(__name__)

_CONFIG_KEYS_DROPPED = (
    "model_type",
    "architectures",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "auto_map",
)


def _backbone_config(model_type: str, llm_path: str) -> tuple[type, dict]:
    """The method from `model_type` (a `--model_type` spelling), the family from the LLM's own
    config (its `model_type`); returns `(config class, the LLM's config fields)`."""
    method = method_of(model_type)
    llm_config = AutoConfig.from_pretrained(resolve_location(llm_path, "LLM"))
    config_cls, _ = classes_for(method, llm_config.model_type, f"{llm_path}/config.json")
    fields = llm_config.to_dict()
    for key in _CONFIG_KEYS_DROPPED:
        fields.pop(key, None)
    return config_cls, fields


def multimodal_config_from_backbones(
    model_type: str, llm_path: str, vision_tower: str, **fields
) -> MultimodalConfigMixin:
    """The config of a new multimodal model: the LLM's architecture and family, the tower's
    (CLIP, SigLIP or OpenCLIP, from its config), and `fields`. `model_type` chooses the method for any
    family: `fusion_llama` / `inverse_llava` (Inverse-LLaVA) or `llava_llama` / `llava`."""
    config_cls, llm_fields = _backbone_config(model_type, llm_path)
    vision_config = read_vision_config(vision_tower).to_dict()
    return config_cls(**llm_fields, vision_config=vision_config, mm_vision_tower=vision_tower, **fields)


def build_from_backbones(
    model_type: str,
    llm_path: str,
    vision_tower: str,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    **config_fields,
) -> tuple[FusionLlamaForCausalLM | LlavaLlamaForCausalLM, LoadReport]:
    """A new Inverse-LLaVA (`model_type` `fusion_llama` / `inverse_llava`) or LLaVA-1.5 baseline
    (`llava_llama` / `llava`) model from a pre-trained LLM of any supported family (read from its
    config) and a CLIP, SigLIP or OpenCLIP tower.

    Returns the model and what was newly initialised: exactly the fusion parameters (or the
    projector), since the LLM and the tower come from their checkpoints.
    """
    config = multimodal_config_from_backbones(model_type, llm_path, vision_tower, **config_fields)
    model_cls = MODEL_CLASSES[config.model_type][1]
    check_folder_pickles(resolve_location(llm_path, "LLM"))  # a hub id: transformers reads it weights-only
    model, report = from_pretrained_checked(
        model_cls,
        resolve_location(llm_path, "LLM"),
        config=config,
        dtype=dtype or torch.float32,
        attn_implementation=attn_implementation,
    )
    model.get_vision_tower().load_pretrained_weights(vision_tower)
    report.record(vision_tower, tower_parameter_names(model))
    logger.info("built %s from %s + %s; %s", model_type, llm_path, vision_tower, report.describe())
    return model, report
