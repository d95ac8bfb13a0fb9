"""transformers' llava format (`LlavaForConditionalGeneration`: the llava-hf checkpoints that
transformers, vLLM and SGLang serve) to and from this project's LLaVA-1.5 baseline.

The format, from transformers' `models/llava` (configuration_llava.py, modeling_llava.py,
processing_llava.py, image_processing_llava.py) and its `convert_llava_weights_to_hf.py`:

- config `"model_type": "llava"` with a `text_config` (the LLM) and a `vision_config` (CLIP);
  `image_token_index` is an `<image>` token added to the vocabulary, which the processor expands
  into `image_seq_length` copies that the model overwrites with the projected image features;
  `vision_feature_layer` (an int, or a list whose hidden states are concatenated) and
  `vision_feature_select_strategy` (`default` drops the CLS position, `full` keeps it); the
  projector is LLaVA-1.5's two-layer GELU MLP (`projector_hidden_act: "gelu"`), no other.
- weights in memory (transformers 5): `model.language_model.*`, `model.vision_tower.vision_model.*`,
  `model.multi_modal_projector.linear_{1,2}.*` and `lm_head.weight`. On disk, the llava-hf hub
  checkpoints and transformers 5's `save_pretrained` use `language_model.model.*`,
  `language_model.lm_head.*`, `vision_tower.*` and `multi_modal_projector.*`; transformers
  renames them when it loads, so this module converts only the in-memory layout.
- LLaVA-1.5's `pad` aspect handling is the image processor's `do_pad` (a square canvas in the
  mean colour, the image centred), its `square` handling the plain CLIP processor.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import Conversation, SeparatorStyle
from llava.model.configuration import LlavaLlamaConfig
from llava.model.llava_llama import LlavaLlamaForCausalLM

LLAVA_HF_PROJECTOR = "mlp2x_gelu"
# (this project's key prefix, transformers 5's key prefix); the first match wins.
_KEY_PREFIXES = (
    ("model.vision_tower.vision_tower.", "model.vision_tower."),
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.", "model.language_model."),
    ("lm_head.", "lm_head."),
)
_MULTIMODAL_FIELDS = (
    "vision_config",
    "mm_vision_tower",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
    "image_aspect_ratio",
    "mm_hidden_size",
    "mm_projector_type",
)


def _rename(key: str, prefixes: tuple[tuple[str, str], ...], source: str) -> str:
    for old, new in prefixes:
        if key.startswith(old):
            return new + key[len(old) :]
    raise KeyError(f"{source}: tensor {key!r} has no place in the other format")


def to_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`LlavaLlamaForCausalLM` keys -> `LlavaForConditionalGeneration` keys (same tensors)."""
    return {_rename(key, _KEY_PREFIXES, "LLaVA-1.5 state dict"): value for key, value in state.items()}


def from_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`LlavaForConditionalGeneration` keys -> `LlavaLlamaForCausalLM` keys (same tensors)."""
    reverse = tuple((new, old) for old, new in _KEY_PREFIXES)
    return {_rename(key, reverse, "llava-hf state dict"): value for key, value in state.items()}


def to_hf_config(config: LlavaLlamaConfig, image_token_id: int, vocab_size: int) -> LlavaConfig:
    """The `LlavaConfig` of a baseline whose vocabulary (with `<image>`) has `vocab_size` entries."""
    if config.mm_projector_type != LLAVA_HF_PROJECTOR:
        raise ValueError(
            f"mm_projector_type {config.mm_projector_type!r} has no llava-hf equivalent "
            f"(transformers' LlavaMultiModalProjector is {LLAVA_HF_PROJECTOR})"
        )
    if config.image_aspect_ratio == "resize":
        raise ValueError("image_aspect_ratio 'resize' has no llava-hf image processor equivalent")
    if config.vision_config.model_type != "clip_vision_model":
        raise ValueError(
            f"a {config.vision_config.model_type} tower: the llava-hf export covers LLaVA-1.5's CLIP towers only"
        )
    text = config.to_dict()
    for name in (*_MULTIMODAL_FIELDS, "model_type", "architectures", "transformers_version"):
        text.pop(name, None)
    text["vocab_size"] = vocab_size
    layers = config.mm_vision_select_layer
    return LlavaConfig(
        text_config=LlamaConfig(**text),
        vision_config=config.vision_config.to_dict(),
        image_token_index=image_token_id,
        image_seq_length=config.num_image_tokens,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if config.mm_vision_select_feature == "patch" else "full",
        vision_feature_layer=layers[0] if len(layers) == 1 else list(layers),
        multimodal_projector_bias=True,
        tie_word_embeddings=config.tie_word_embeddings,
    )


def from_hf_config(
    config: LlavaConfig, image_aspect_ratio: str, mm_vision_tower: str | None
) -> LlavaLlamaConfig:
    """The baseline config of a llava-hf checkpoint (`image_aspect_ratio` from its processor)."""
    text = config.text_config
    if text.model_type != "llama":
        raise ValueError(
            f"llava-hf checkpoint with a {text.model_type!r} LLM: only Llama-family LLMs are supported"
        )
    if config.projector_hidden_act != "gelu" or not config.multimodal_projector_bias:
        raise ValueError(
            f"llava-hf projector (act {config.projector_hidden_act!r}, bias "
            f"{config.multimodal_projector_bias}) is not LLaVA-1.5's {LLAVA_HF_PROJECTOR}"
        )
    fields = text.to_dict()
    for name in ("model_type", "architectures", "transformers_version", "dtype", "torch_dtype"):
        fields.pop(name, None)
    layers = config.vision_feature_layer
    return LlavaLlamaConfig(
        **fields,
        vision_config=config.vision_config.to_dict(),
        mm_vision_tower=mm_vision_tower,
        mm_vision_select_layer=[layers] if isinstance(layers, int) else list(layers),
        mm_vision_select_feature="patch"
        if config.vision_feature_select_strategy == "default"
        else "cls_patch",
        image_aspect_ratio=image_aspect_ratio,
        mm_projector_type=LLAVA_HF_PROJECTOR,
    )


def _jinja_literal(text: str) -> str:
    """`text` as a Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def chat_template(conv: Conversation) -> str:
    """A Jinja chat template that renders OpenAI-style messages exactly as `conv`'s
    `get_prompt()` does (images first in a user turn, one `<image>\\n` each, as
    `with_image_tokens` places them; a leading `system` message replaces the system prompt).

    Only `SeparatorStyle.TWO` templates (vicuna_v1, llava_v1), LLaVA-1.5's, are supported.
    """
    if conv.sep_style is not SeparatorStyle.TWO:
        raise ValueError(f"template {conv.name!r}: only vicuna_v1-style (two-separator) templates export")
    user, assistant = conv.roles
    image = _jinja_literal(DEFAULT_IMAGE_TOKEN + "\n")
    return "".join(
        [
            "{%- set ns = namespace(system=" + _jinja_literal(conv.system) + ") -%}",
            "{%- if messages and messages[0]['role'] == 'system' -%}",
            "{%- set ns.system = messages[0]['content'] if messages[0]['content'] is string "
            "else messages[0]['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}",
            "{%- set messages = messages[1:] -%}",
            "{%- endif -%}",
            "{{- ns.system + " + _jinja_literal(conv.sep) + " -}}",
            "{%- for message in messages -%}",
            "{%- if message['role'] == 'user' -%}{{- " + _jinja_literal(user + ": ") + " -}}",
            "{%- elif message['role'] == 'assistant' -%}{{- " + _jinja_literal(assistant + ": ") + " -}}",
            "{%- else -%}{{- raise_exception('unsupported role ' + message['role']) -}}{%- endif -%}",
            "{%- if message['content'] is string -%}{{- message['content'] -}}",
            "{%- else -%}",
            "{%- for part in message['content'] if part['type'] == 'image' -%}{{- "
            + image
            + " -}}{%- endfor -%}",
            "{%- for part in message['content'] if part['type'] == 'text' -%}{{- part['text'] -}}{%- endfor -%}",
            "{%- endif -%}",
            "{%- if message['role'] == 'user' -%}{{- " + _jinja_literal(conv.sep) + " -}}",
            "{%- else -%}{{- " + _jinja_literal(conv.sep2) + " -}}{%- endif -%}",
            "{%- endfor -%}",
            "{%- if add_generation_prompt -%}{{- " + _jinja_literal(assistant + ":") + " -}}{%- endif -%}",
        ]
    )


def load_llava_hf(
    path: str | Path, dtype: torch.dtype = torch.float32, attn_implementation: str | None = None
) -> LlavaLlamaForCausalLM:
    """A llava-hf checkpoint folder as the LLaVA-1.5 baseline, sharing the loaded tensors.

    transformers' own loader reads the weights (either on-disk layout, sharded or not), so a
    file it cannot read fails with its message; the baseline then takes every tensor, and a
    tensor without a place in it is an error naming the key.
    """
    path = Path(path)
    source = LlavaForConditionalGeneration.from_pretrained(
        path, dtype=dtype, attn_implementation=attn_implementation
    )
    processor_file = path / "processor_config.json"
    processor = json.loads(processor_file.read_text()) if processor_file.exists() else {}
    image_processor = processor.get("image_processor", processor)
    if not image_processor and (path / "preprocessor_config.json").exists():
        image_processor = json.loads((path / "preprocessor_config.json").read_text())
    aspect = "pad" if image_processor.get("do_pad") else "square"
    config = from_hf_config(source.config, aspect, mm_vision_tower=None)
    config._attn_implementation = source.config.text_config._attn_implementation
    with torch.device("meta"):
        model = LlavaLlamaForCausalLM(config)
    model.load_state_dict(from_hf_state_dict(source.state_dict()), strict=True, assign=True)
    buffers = from_hf_state_dict(dict(source.named_buffers()))  # non-persistent ones too
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:
            owner, _, leaf = name.rpartition(".")
            model.get_submodule(owner).register_buffer(leaf, buffers[name], persistent=False)
    model.generation_config = source.generation_config  # suppresses the `<image>` token
    return model.eval()


def is_llava_hf_config(config: dict) -> bool:
    """Whether a config.json dict is transformers' llava format (not LLaVA's own `llava`,
    which is a flat Llama config with `mm_*` fields)."""
    return config.get("model_type") == "llava" and "text_config" in config
