"""The two models' classes for every LLM family, generated from `llava.model.families`, and
their registration with the Auto classes.

For a method (`fusion`: Inverse-LLaVA, `llava`: the LLaVA-1.5 baseline) and a family, the
classes are the method's mixins over the family's own (`FusionQwen2ForCausalLM(
FusionCausalLMMixin, Qwen2ForCausalLM)` with decoder
`FusionQwen2Model(FusionModelMixin, Qwen2Model)`), under model_type `<method>_<family>`
(`fusion_llama` and `llava_llama` for the Llama family, as before).
"""

from __future__ import annotations

from functools import cache

from transformers import AutoConfig, AutoModelForCausalLM

from llava.model.configuration import METHODS, config_class, model_type_of
from llava.model.families import FAMILIES, family_of, publish
from llava.model.fusion_model import FusionCausalLMMixin, FusionModelMixin
from llava.model.llava_model import LlavaCausalLMMixin, LlavaModelMixin
from llava.model.open_clip_config import OPEN_CLIP_MODEL_TYPE, OpenClipVisionConfig

_MIXINS = {
    "fusion": (FusionModelMixin, FusionCausalLMMixin),
    "llava": (LlavaModelMixin, LlavaCausalLMMixin),
}
# `--model_type` spellings of the two methods: LLaVA's and the release's (which name the Llama
# family, and choose the method for any family here), and family-neutral ones.
METHOD_SPELLINGS = {
    "fusion_llama": "fusion",
    "inverse_llava": "fusion",
    "llava_llama": "llava",
    "llava": "llava",
}


def _make(name: str, bases: tuple[type, ...], **attributes) -> type:
    return publish(type(name, bases, {"__module__": __name__, "__qualname__": name, **attributes}))


@cache
def model_class(method: str, family_model_type: str) -> type:
    """The causal LM class of `method` on a family, generated once."""
    family = FAMILIES[family_model_type]
    config_cls = config_class(method, family_model_type)
    model_mixin, lm_mixin = _MIXINS[method]
    prefix = f"{method.capitalize()}{family.prefix}"
    decoder = _make(f"{prefix}Model", (model_mixin, family.model_cls), config_class=config_cls)
    return _make(
        f"{prefix}ForCausalLM",
        (lm_mixin, family.causal_lm_cls),
        config_class=config_cls,
        decoder_cls=decoder,
    )


def method_of(model_type: str) -> str:
    """The method a `--model_type` spelling chooses (`fusion_llama`/`inverse_llava`: fusion;
    `llava_llama`/`llava`: the baseline)."""
    if model_type not in METHOD_SPELLINGS:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {sorted(METHOD_SPELLINGS)}")
    return METHOD_SPELLINGS[model_type]


def classes_for(method: str, llm_model_type: str, source: str) -> tuple[type, type]:
    """`(config class, model class)` of `method` on the family of an LLM whose config (read from
    `source`) says `model_type` = `llm_model_type`."""
    family = family_of(llm_model_type, source)
    return config_class(method, family.model_type), model_class(method, family.model_type)


# model_type (`fusion_qwen2`) -> (config class, model class), for every method and family.
MODEL_CLASSES: dict[str, tuple[type, type]] = {
    model_type_of(method, family): (config_class(method, name), model_class(method, name))
    for name, family in FAMILIES.items()
    for method in METHODS
}


def register_auto_classes() -> None:
    """Make `AutoConfig` / `AutoModelForCausalLM` know every generated model_type, and `AutoConfig`
    the OpenCLIP tower's config (a `vision_config` with its model_type is built through it)."""
    AutoConfig.register(OPEN_CLIP_MODEL_TYPE, OpenClipVisionConfig, exist_ok=True)
    for model_type, (config_cls, model_cls) in MODEL_CLASSES.items():
        AutoConfig.register(model_type, config_cls, exist_ok=True)
        AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)
