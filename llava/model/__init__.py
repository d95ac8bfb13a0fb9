"""Model components: configs, vision tower, projector, fusion, the two language models, builder.

Importing this package registers `fusion_llama` and `llava_llama` with the Auto classes.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from llava.model.configuration import FusionLlamaConfig, LlavaLlamaConfig
from llava.model.fusion_llama import FusionLlamaForCausalLM
from llava.model.llava_llama import LlavaLlamaForCausalLM

AutoConfig.register("fusion_llama", FusionLlamaConfig, exist_ok=True)
AutoConfig.register("llava_llama", LlavaLlamaConfig, exist_ok=True)
AutoModelForCausalLM.register(FusionLlamaConfig, FusionLlamaForCausalLM, exist_ok=True)
AutoModelForCausalLM.register(LlavaLlamaConfig, LlavaLlamaForCausalLM, exist_ok=True)

__all__ = ["FusionLlamaConfig", "FusionLlamaForCausalLM", "LlavaLlamaConfig", "LlavaLlamaForCausalLM"]
