"""Model components: configs, vision tower, projector, fusion, the two language models, builder.

Importing this package registers both models on every LLM family (`fusion_llama`, `llava_llama`,
`fusion_qwen2`, ...; see `llava.model.registry`) with the Auto classes.
"""

from llava.model.configuration import FusionLlamaConfig, LlavaLlamaConfig
from llava.model.fusion_llama import FusionLlamaForCausalLM
from llava.model.llava_llama import LlavaLlamaForCausalLM
from llava.model.registry import register_auto_classes

register_auto_classes()

__all__ = ["FusionLlamaConfig", "FusionLlamaForCausalLM", "LlavaLlamaConfig", "LlavaLlamaForCausalLM"]
