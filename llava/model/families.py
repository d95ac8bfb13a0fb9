"""The decoder LLM families both multimodal models are built on, keyed by the LLM's `model_type`.

A family is the library's own classes plus what its attention does differently; everything
else (configs, fusion attention, models) is generated from this table by
`llava.model.registry`, so a new family is one entry here. What differs, from transformers'
`models/<family>/modeling_<family>.py`:

| family (`model_type`) | q/k/v biases | q/k norm after the projection | sliding window | tied embeddings |
|---|---|---|---|---|
| `llama` (Llama 1/2, Vicuna, Llama-3.x) | `attention_bias` | no | no | `tie_word_embeddings` (Llama-3.2 1B/3B) |
| `mistral` | no | no | `config.sliding_window` (every layer) | no |
| `qwen2` (Qwen2, Qwen2.5) | always | no | per layer (`layer_types`) | `tie_word_embeddings` (0.5B-3B) |
| `qwen3` | `attention_bias` | RMSNorm over head_dim | per layer (`layer_types`) | `tie_word_embeddings` |
| `gemma` | `attention_bias` | no | no | always; embeddings scaled by sqrt(d_h) |

Biases, GQA widths and tied embeddings live in the library's modules and configs, which are
used as they are; only the q/k norm and the sliding window enter the fusion attention's forward.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from torch import nn
from transformers.models.gemma import modeling_gemma
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.qwen3 import modeling_qwen3


def no_window(attention: nn.Module) -> None:
    return None


def layer_window(attention: nn.Module) -> int | None:
    """Qwen2/Qwen3: the window of sliding-attention layers (`layer_types`), else None."""
    return attention.sliding_window


def config_window(attention: nn.Module) -> int | None:
    """Mistral: `config.sliding_window` for every layer (null in v0.2 and later)."""
    return getattr(attention.config, "sliding_window", None)


@dataclass(frozen=True)
class Family:
    """One decoder family: the library's classes and its attention's particulars.

    Attributes:
        model_type: the LLM checkpoint's `model_type` (`llama`, `qwen2`, ...).
        prefix: the class-name prefix of the generated classes (`FusionQwen2ForCausalLM`).
        config_cls, model_cls, causal_lm_cls: the library's config, decoder and causal LM.
        attention_cls: the library's attention; the fusion attention subclasses it.
        modeling: the library's modeling module (its `apply_rotary_pos_emb` and
            `eager_attention_forward` are used).
        qk_norm: q and k are RMS-normalised per head after the projection (`q_norm`, `k_norm`).
        sliding_window: the attention's window for the attention interface (None: full).
    """

    model_type: str
    prefix: str
    modeling: ModuleType
    config_cls: type
    model_cls: type
    causal_lm_cls: type
    attention_cls: type
    qk_norm: bool = False
    sliding_window: Callable[[nn.Module], int | None] = no_window


def _family(model_type: str, prefix: str, modeling: ModuleType, **particulars) -> Family:
    return Family(
        model_type=model_type,
        prefix=prefix,
        modeling=modeling,
        config_cls=getattr(modeling, f"{prefix}Config"),
        model_cls=getattr(modeling, f"{prefix}Model"),
        causal_lm_cls=getattr(modeling, f"{prefix}ForCausalLM"),
        attention_cls=getattr(modeling, f"{prefix}Attention"),
        **particulars,
    )


FAMILIES: dict[str, Family] = {
    family.model_type: family
    for family in (
        _family("llama", "Llama", modeling_llama),
        _family("mistral", "Mistral", modeling_mistral, sliding_window=config_window),
        _family("qwen2", "Qwen2", modeling_qwen2, sliding_window=layer_window),
        _family("qwen3", "Qwen3", modeling_qwen3, qk_norm=True, sliding_window=layer_window),
        _family("gemma", "Gemma", modeling_gemma),
    )
}


def publish(cls: type) -> type:
    """Make a generated class importable under its name from its module (as pickle and
    `from llava.model.configuration import FusionQwen2Config` need); returns it."""
    setattr(sys.modules[cls.__module__], cls.__name__, cls)
    return cls


def family_of(llm_model_type: str, source: str) -> Family:
    """The family of an LLM whose config says `model_type` = `llm_model_type` (read from `source`)."""
    try:
        return FAMILIES[llm_model_type]
    except KeyError:
        raise ValueError(
            f"{source}: model_type {llm_model_type!r} is not a supported LLM family; supported: "
            f"{sorted(FAMILIES)} (see llava/model/families.py to add one)"
        ) from None
