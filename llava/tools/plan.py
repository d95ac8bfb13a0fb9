"""A memory plan for the paper's recipe at Vicuna-7B/13B + CLIP-L/336 shapes, without weights.

    python -m llava.tools.plan --model vicuna-7b [--gpus 8] [--json]

Both models are built on the meta device from the shapes alone (no download, no memory), the
training recipe (`llava.train.recipe.apply_recipe`, the one place that decides what trains) is
applied with the scripts' LoRA settings, and the trainable parameters are counted by group.
Per-GPU memory is then estimated for DeepSpeed ZeRO-2 and ZeRO-3 at the scripts' micro-batch and
sequence length, with and without activation checkpointing, in bf16:

| term | bytes | ZeRO-2 | ZeRO-3 |
|---|---|---|---|
| weights | 2 x all parameters | replicated | / GPUs |
| gradients | 2 x trainable | / GPUs | / GPUs |
| Adam (fp32 master, m, v) | 12 x trainable | / GPUs | / GPUs |
| activations | see `activation_bytes` | per GPU | per GPU |
| logits | b x s x V x (2 + 4): bf16 logits and the fp32 copy the loss reads | per GPU | per GPU |

An estimate of what training holds at its peak, not a measurement: it leaves out the CUDA
context, allocator fragmentation, DeepSpeed's communication buckets and temporary buffers.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass

import torch

from llava.model.configuration import CLIP_L_336, FusionLlamaConfig, LlavaLlamaConfig
from llava.model.fusion_llama import FusionLlamaForCausalLM
from llava.model.llava_llama import LlavaLlamaForCausalLM
from llava.train.arguments import RunSpec
from llava.train.recipe import apply_recipe

logger = logging.getLogger(__name__)

# lmsys/vicuna-{7b,13b}-v1.5 (their config.json): Llama-2 shapes, a 4096-position context.
VICUNA = {
    "vicuna-7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
    },
    "vicuna-13b": {
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
    },
}
VOCAB_SIZE = 32000
# scripts/v1_5: LoRA r=128, alpha=256; Inverse-LLaVA at 32 samples per GPU (fusion in layer 0, no
# LoRA there), the baseline's stage 2 at 16 (global 128 on 8 GPUs); 2048 positions.
LORA = {"lora_r": 128, "lora_alpha": 256, "lora_dropout": 0.05}
MICRO_BATCH = {"fusion_llama": 32, "llava_llama": 16}
SEQUENCE_LENGTH = 2048
_GIB = 1024**3


def build_on_meta(model_type: str, llm: str) -> torch.nn.Module:
    """The model of `model_type` at `llm`'s shapes with CLIP-L/336, parameters on the meta device."""
    shapes = {**VICUNA[llm], "vocab_size": VOCAB_SIZE, "max_position_embeddings": 4096}
    if model_type == "fusion_llama":
        config = FusionLlamaConfig(**shapes, vision_config=CLIP_L_336, mm_vision_select_layer=[-1])
        model_cls = FusionLlamaForCausalLM
    else:
        config = LlavaLlamaConfig(
            **shapes, vision_config=CLIP_L_336, mm_vision_select_layer=[-2], mm_projector_type="mlp2x_gelu"
        )
        model_cls = LlavaLlamaForCausalLM
    with torch.device("meta"):
        return model_cls(config)


def trainable_counts(model_type: str, llm: str) -> tuple[dict[str, int], int, object]:
    """Trainable parameters by group (`lora`, `fusion`, `projector`), all parameters, and the config."""
    model = build_on_meta(model_type, llm)
    skip = model.config.fusion_layer_ids if model_type == "fusion_llama" else []
    spec = RunSpec(model_type, {}, {**LORA, "skip_layers": skip}, projector_only=False, freeze_backbone=False)
    model, plan = apply_recipe(model, spec)
    sizes = dict((name, p.numel()) for name, p in model.named_parameters())
    counts = {
        group: sum(sizes[n] for n in plan.groups.get(group, [])) for group in ("lora", "fusion", "projector")
    }
    if model_type == "llava_llama":
        del counts["fusion"]
    return counts, sum(sizes.values()), model.config


def activation_bytes(config, micro_batch: int, seq: int, checkpointing: bool, lora_layers: int) -> int:
    """bf16 activations the backward pass needs, per GPU.

    Per token and decoder layer (h hidden, i intermediate width), the tensors autograd keeps:
    attention: the two norm inputs and outputs (4h), q, k, v (3h), the attention output and
    o_proj's input (2h), flash/SDPA's softmax statistics (negligible); MLP: gate, up, the
    activation, their product (4i); that is `10h + 4i` elements (a layer's input, h, is among
    them). LoRA's dropout keeps a masked copy of every adapted linear's input: q, k, v, o, gate,
    up (6h) and down (i). With checkpointing only each layer's input (h) is kept, plus one layer
    recomputed at a time.
    """
    h, i = config.hidden_size, config.intermediate_size
    tokens = micro_batch * seq
    per_layer = 10 * h + 4 * i
    lora_extra = 6 * h + i
    layers = config.num_hidden_layers
    if checkpointing:
        elements = tokens * (layers * h + per_layer + lora_extra)
    else:
        elements = tokens * (layers * per_layer + lora_layers * lora_extra)
    return 2 * elements


@dataclass
class MemoryPlan:
    """Per-GPU GiB of one setting."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits

    def as_dict(self) -> dict[str, float]:
        return {**{k: round(v, 2) for k, v in asdict(self).items()}, "total": round(self.total, 2)}


def memory_plan(
    model_type: str, config, trainable: int, total: int, gpus: int, zero: int, checkpointing: bool
) -> MemoryPlan:
    """Per-GPU GiB of `model_type` (its `config`, `trainable` of `total` parameters) on `gpus`
    GPUs under ZeRO stage `zero`."""
    fusion_layers = len(config.fusion_layer_ids) if model_type == "fusion_llama" else 0
    micro_batch = MICRO_BATCH[model_type]
    activations = activation_bytes(
        config, micro_batch, SEQUENCE_LENGTH, checkpointing, config.num_hidden_layers - fusion_layers
    )
    return MemoryPlan(
        weights=2 * total / (gpus if zero == 3 else 1) / _GIB,
        gradients=2 * trainable / gpus / _GIB,
        optimizer=12 * trainable / gpus / _GIB,
        activations=activations / _GIB,
        logits=micro_batch * SEQUENCE_LENGTH * config.vocab_size * 6 / _GIB,
    )


def plan(llm: str, gpus: int) -> dict:
    """The whole plan: parameter counts of both models, and per-GPU GiB for each setting."""
    out: dict = {}
    for model_type in ("fusion_llama", "llava_llama"):
        counts, total, config = trainable_counts(model_type, llm)
        out[model_type] = counts
        out.setdefault("all_parameters", {})[model_type] = total
        trainable = sum(counts.values())
        out.setdefault("memory_gib", {})[model_type] = {
            f"zero{zero}_{'checkpointing' if ckpt else 'no_checkpointing'}": memory_plan(
                model_type, config, trainable, total, gpus, zero, ckpt
            ).as_dict()
            for zero in (2, 3)
            for ckpt in (True, False)
        }
    out["conditions"] = {
        "llm": llm,
        "vision_tower": "openai/clip-vit-large-patch14-336 (shapes)",
        "gpus": gpus,
        "micro_batch": MICRO_BATCH,
        "sequence_length": SEQUENCE_LENGTH,
        "dtype": "bf16 weights and activations, fp32 Adam states",
        "lora": LORA,
    }
    return out


def _table(result: dict) -> str:
    lines = []
    for model_type in ("fusion_llama", "llava_llama"):
        counts = ", ".join(f"{group} {n:,}" for group, n in result[model_type].items())
        lines.append(f"{model_type}: trainable {counts} of {result['all_parameters'][model_type]:,}")
        for setting, gib in result["memory_gib"][model_type].items():
            parts = ", ".join(f"{k} {v:.1f}" for k, v in gib.items() if k != "total")
            lines.append(f"  {setting:<26} {gib['total']:6.1f} GiB per GPU ({parts})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(VICUNA), default="vicuna-7b")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error(f"--gpus must be >= 1, got {args.gpus}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = plan(args.model, args.gpus)
    print(json.dumps(result, indent=2) if args.json else _table(result))  # the command's output
    return result


if __name__ == "__main__":
    main()
