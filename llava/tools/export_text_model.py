"""Export the text path of a multimodal checkpoint as a plain causal LM of its LLM family.

    python -m llava.tools.export_text_model --model-path CKPT [--model-base BASE] --output-dir OUT

`OUT` holds what `transformers.AutoModelForCausalLM.from_pretrained(OUT)` loads without this
package: `config.json` of the family (`LlamaForCausalLM`, `Qwen2ForCausalLM`, ...), safetensors
weights, the tokenizer, a generation config and a model card. On a text-only prompt its logits are
the multimodal model's (the same function; only the order of float additions differs), so
language benchmarks (lm-eval's `--model hf`) measure what training did to the LLM's text
abilities (docs/evaluation.md, "Language retention").

- Inverse-LLaVA (`fusion_<family>`): each fusion layer's text term is folded into its q/k/v
  weights (and biases), see `llava.tools.text_path`; a variant whose text term is not affine
  (`gated`), or a constant term on a family without q/k/v biases (Mistral), is refused.
- The LLaVA-1.5 baseline (`llava_<family>`): the text path is its LLM as it is.

A LoRA run (with `--model-base`) is loaded with its adapter merged, as `load_pretrained_model`
loads it; the tower and the projector are left out.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
from pathlib import Path

import torch
from transformers import PreTrainedModel

from llava.cli_errors import UserError, run_command
from llava.model.builder import load_pretrained_model
from llava.model.families import FAMILIES, Family
from llava.model.fusion_model import FusionCausalLMMixin
from llava.model.llava_model import LlavaCausalLMMixin
from llava.tools.text_path import AffineTerm, TextPathError, text_path_terms

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The multimodal parts of the state dict, which a text-only prompt never runs.
_MULTIMODAL_PREFIXES = ("model.vision_tower.", "model.mm_projector.")
_FUSION_PART = ".self_attn.fusion."
_CONFIG_FIELDS_DROPPED = ("transformers_version", "architectures", "dtype")
# Families whose q/k/v projections have biases: always (Qwen2) or behind `attention_bias`, which
# also gives o_proj a bias (set to zero). Mistral's projections have none.
_BIAS_ALWAYS = ("qwen2",)
_BIAS_SWITCH = {"llama": "attention_bias", "qwen3": "attention_bias", "gemma": "attention_bias"}


class ExportRefusedError(UserError, ValueError):
    """A checkpoint with no plain text-only equivalent, or an output folder already in use."""


def _plain_config(config, family: Family, with_bias: bool):
    """The family's own config with the multimodal config's LLM fields (and q/k/v biases when a
    fusion term has a constant part)."""
    fields = {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(family.config_cls)
        if field.name not in _CONFIG_FIELDS_DROPPED and hasattr(config, field.name)
    }
    if with_bias and family.model_type not in _BIAS_ALWAYS:
        if family.model_type not in _BIAS_SWITCH:
            raise TextPathError(
                f"fusion_variant {config.fusion_variant!r} adds a constant to q/k/v at text positions, and "
                f"{family.prefix}'s q/k/v projections have no bias to hold it; its text path cannot be exported"
            )
        fields[_BIAS_SWITCH[family.model_type]] = True
    return family.config_cls(**fields)


def _fold(state: dict[str, torch.Tensor], prefix: str, term: AffineTerm, width: int) -> None:
    """Add one target's text term to the projection `prefix` (`model.layers.0.self_attn.q_proj`)."""
    weight = state[f"{prefix}.weight"]  # [out, d_h]
    if term.weight is not None:
        state[f"{prefix}.weight"] = (weight.double() + term.weight).to(weight.dtype)
    if term.bias is not None:
        bias = state.get(f"{prefix}.bias", weight.new_zeros(width))  # [out]
        state[f"{prefix}.bias"] = (bias.double() + term.bias).to(weight.dtype)


def _zero_biases(state: dict[str, torch.Tensor], num_layers: int) -> None:
    """Zero biases for the q/k/v/o projections `attention_bias` gives every layer, where no term
    filled one."""
    for layer_id in range(num_layers):
        for projection in ("q", "k", "v", "o"):
            prefix = f"model.layers.{layer_id}.self_attn.{projection}_proj"
            weight = state[f"{prefix}.weight"]  # [out, in]
            state.setdefault(f"{prefix}.bias", weight.new_zeros(weight.shape[0]))


def text_model(model, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The plain causal LM of the family that computes `model`'s text path (see the module
    docstring), on the CPU, its weights in `dtype` (default: `model`'s)."""
    if isinstance(model, FusionCausalLMMixin):
        layers = {i: text_path_terms(fusion) for i, fusion in model.fusion_branches().items()}
    elif isinstance(model, LlavaCausalLMMixin):
        layers = {}
    else:
        raise ExportRefusedError(
            f"a {type(model).__name__} is not a multimodal model of this project: it is a plain causal LM "
            "already (load it as it is)"
        )
    config = model.config
    family = FAMILIES[config.family_model_type]
    with_bias = any(term.bias is not None for terms in layers.values() for term in terms.values())
    plain_config = _plain_config(config, family, with_bias)
    state = {
        name: tensor.detach().cpu()
        for name, tensor in model.state_dict().items()
        if not name.startswith(_MULTIMODAL_PREFIXES) and _FUSION_PART not in name
    }
    for layer_id, terms in layers.items():
        fusion = model.fusion_branches()[layer_id]
        for target, width in zip(fusion.targets, fusion.split_sizes, strict=True):
            _fold(state, f"model.layers.{layer_id}.self_attn.{target}_proj", terms[target], width)
    if with_bias and family.model_type in _BIAS_SWITCH:
        _zero_biases(state, config.num_hidden_layers)
    plain, info = family.causal_lm_cls.from_pretrained(
        None, config=plain_config, state_dict=state, dtype=dtype or model.dtype, output_loading_info=True
    )
    left = {kind: sorted(keys) for kind, keys in info.items() if keys}
    if left:  # the fold covers every parameter of the family's model, or the export is wrong
        raise RuntimeError(f"the text path of {type(model).__name__} does not fill {family.prefix}: {left}")
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()


def _model_card(model_path: str, model_base: str | None, plain: PreTrainedModel) -> str:
    base = f" with base `{model_base}`" if model_base else ""
    return (
        "---\nlibrary_name: transformers\npipeline_tag: text-generation\n---\n\n"
        f"# Text path of `{model_path}`\n\n"
        f"Exported by `python -m llava.tools.export_text_model` from `{model_path}`{base}: a plain "
        f"`{type(plain).__name__}` whose logits on text-only prompts are the multimodal model's "
        "(fusion terms folded into the q/k/v projections, LoRA merged, vision parts left out).\n"
    )


def export_text_model(
    model_path: str,
    output_dir: str | Path,
    model_base: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write the plain text-only checkpoint of `model_path` to `output_dir` (see the module
    docstring), its weights in `dtype`; the fold is computed from the float32 weights."""
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ExportRefusedError(f"--output-dir {output_dir} is not empty: choose a new folder")
    tokenizer, model, _, _ = load_pretrained_model(model_path, model_base, device="cpu", dtype=torch.float32)
    plain = text_model(model, dtype)
    plain.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / "README.md").write_text(_model_card(model_path, model_base, plain), encoding="utf-8")
    logger.info("wrote the text path of %s as a %s to %s", model_path, type(plain).__name__, output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-path", required=True, help="an Inverse-LLaVA or LLaVA-1.5 baseline checkpoint"
    )
    parser.add_argument("--model-base", default=None, help="the base LLM of a LoRA or projector-only run")
    parser.add_argument("--output-dir", required=True, help="a new (or empty) folder")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="the saved weights' dtype (default float32)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return export_text_model(args.model_path, args.output_dir, args.model_base, DTYPES[args.dtype])


if __name__ == "__main__":
    run_command(main)
