"""Padding-free versus padded batches: useful tokens per second and FLOPs per training step, side
by side in one run, on a length mix like LLaVA-v1.5-mix665k's.

    python -m llava.bench.padding_free [--json] [--model fusion_llama|llava_llama]
        [--order shuffled|grouped] [--batch 16] [--steps 8] [--device cpu|cuda]

The mix (`MIX`): one-image VQA with short answers (VQAv2, GQA, OKVQA, OCR-VQA, A-OKVQA, TextCaps,
RefCOCO, VG: 466K of the 665K samples, the questions of an image merged into one conversation),
long multi-turn conversations about an image (LLaVA-Instruct-158K) and text-only ShareGPT (40K).
The text lengths are assumed ranges in Vicuna tokens (not read from the file), drawn uniformly,
and scaled with the image: at CLIP-L/336 an image takes 576 positions, here `image_positions`
(64), so every text length is multiplied by 64 / 576. `--order shuffled` draws the micro-batches
at random (the default sampler); `grouped` as `--group_by_modality_length True` (the scripts):
one modality per global step of `batch x 8` samples, longest first.

Three copies of one random model (the training recipe: LoRA on the LLM, the fusion branch or the
projector trained, AdamW; dropout off so that they stay equal) train on the same micro-batches,
step by step in turns, under the attention the training entry point picks (`train_mem.py`:
flash-attention 2 where usable, else SDPA):
- `padded`: `DataCollatorForSupervisedDataset`, that attention with the padding mask;
- `padding_free`: `PaddingFreeCollator`, the attention `--padding_free True` runs
  (`llava.model.per_sample_attention.padding_free_attention`): flash-attention's varlen path, or
  SDPA run on each sample's causal block (`per_sample_attention`; on CUDA in bf16/fp16, PyTorch's
  varlen flash-attention);
- `packed_mask`: the same rows under SDPA with transformers' packed-sequence mask (what
  `--padding_free True` ran before it computed attention per sample): exact, but SDPA computes the
  whole `[S, S]` score matrix of the packed row of S positions.
On a CPU the models run in float32; on CUDA in bfloat16 (`--dtype` overrides).
Reported per mode: useful tokens per second (the samples' positions, image positions included,
padding excluded; median step time of forward + backward + optimizer step) and FLOPs per step
(counted by `torch.utils.flop_counter.FlopCounterMode` on forward + backward, mean over the
steps); the ratios to `padded`; the largest loss and gradient differences to `padded` over the
steps and both padding-free modes (the models train in lockstep, so this holds at every step).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.data.dataset import DataCollatorForSupervisedDataset
from llava.data.packing import PaddingFreeCollator
from llava.data.sampler import modality_grouped_indices
from llava.model import FusionLlamaConfig, FusionLlamaForCausalLM, LlavaLlamaConfig, LlavaLlamaForCausalLM
from llava.model.per_sample_attention import padding_free_attention
from llava.train.arguments import RunSpec
from llava.train.recipe import apply_recipe, parameter_groups
from llava.train.train_mem import default_attn_implementation

logger = logging.getLogger(__name__)

LLM = dict(
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=8,
    vocab_size=2000,
)
VISION = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=112,
    patch_size=14,
)  # 8 x 8 = 64 image positions
FULL_IMAGE_POSITIONS = 576  # CLIP-L/336
MAX_LENGTH = 2048  # --model_max_length of the scripts, in full-scale positions
WORLD = 8  # GPUs of the scripts' global step, for `--order grouped`
LORA_R = 16


@dataclass(frozen=True)
class Kind:
    """One kind of sample of the mix: its share, its images and its text length range (full scale)."""

    name: str
    share: float
    images: int
    text_tokens: tuple[int, int]


MIX = (
    Kind("vqa_short_answers", 466 / 665, 1, (60, 250)),
    Kind("multi_turn_conversation", 158 / 665, 1, (150, 700)),
    Kind("sharegpt_text_only", 40 / 665, 0, (200, 2048)),
)


def draw_samples(n: int, image_positions: int, seed: int = 0) -> list[dict]:
    """`n` samples of the mix as the dataset gives them (ids with image placeholders after the
    first token, the text's second half supervised), each with its `kind`."""
    generator = torch.Generator().manual_seed(seed)
    scale = image_positions / FULL_IMAGE_POSITIONS
    shares = torch.tensor([kind.share for kind in MIX])
    samples = []
    for k in torch.multinomial(shares, n, replacement=True, generator=generator).tolist():
        kind = MIX[k]
        low, high = kind.text_tokens
        high = min(high, MAX_LENGTH - kind.images * FULL_IMAGE_POSITIONS)
        text = round(scale * torch.randint(low, high + 1, (1,), generator=generator).item())
        ids = torch.randint(3, LLM["vocab_size"], (text,), generator=generator)
        ids = torch.cat([ids[:1], torch.full((kind.images,), IMAGE_TOKEN_INDEX), ids[1:]])
        labels = ids.clone()
        labels[: kind.images + text // 2] = IGNORE_INDEX
        side = VISION["image_size"]
        images = torch.randn(kind.images, 3, side, side, generator=generator) if kind.images else None
        samples.append({"input_ids": ids, "labels": labels, "images": images, "kind": kind.name})
    return samples


def order_samples(samples: list[dict], order: str, batch: int, seed: int = 0) -> list[dict]:
    """The samples in the order the trainer draws them: shuffled, or modality-grouped."""
    generator = torch.Generator().manual_seed(seed)
    if order == "shuffled":
        return [samples[i] for i in torch.randperm(len(samples), generator=generator).tolist()]
    lengths = [
        (s["input_ids"].shape[0] if s["images"] is not None else -s["input_ids"].shape[0]) for s in samples
    ]
    return [samples[i] for i in modality_grouped_indices(lengths, batch, WORLD, generator)]


def build(model_type: str, attention: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """A random model of the bench's shapes with its training recipe (LoRA r=16; no dropout)."""
    common = dict(**LLM, vision_config=VISION, attn_implementation=attention)
    if model_type == "fusion_llama":
        config = FusionLlamaConfig(**common, mm_vision_select_layer=-1, fusion_dropout=0.0)
        model, skip = FusionLlamaForCausalLM(config), config.fusion_layer_ids
    else:
        config = LlavaLlamaConfig(**common, mm_projector_type="mlp2x_gelu")
        model, skip = LlavaLlamaForCausalLM(config), []
    model.config.use_cache = False
    lora = {"lora_r": LORA_R, "lora_alpha": 2 * LORA_R, "lora_dropout": 0.0, "skip_layers": skip}
    spec = RunSpec(
        model_type=model_type, config_fields={}, lora=lora, projector_only=False, freeze_backbone=False
    )
    model, plan = apply_recipe(model.to(device, dtype), spec)
    with torch.no_grad():  # non-trivial trainables (their initialisation is zero)
        generator = torch.Generator().manual_seed(1)
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator).to(param) * 0.02)
    model.train()
    model.optimizer = torch.optim.AdamW(parameter_groups(model, plan, 2e-4, 0.0), lr=2e-4)
    return model


def expanded_length(sample: dict, image_positions: int) -> int:
    """Positions of a sample once each placeholder is expanded into its image's positions."""
    n_images = 0 if sample["images"] is None else sample["images"].shape[0]
    return sample["input_ids"].shape[0] + n_images * (image_positions - 1)


def forward_backward(model: torch.nn.Module, batch: dict, num_items: torch.Tensor) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "skipped_samples"}
    loss = model(**inputs, num_items_in_batch=num_items).loss
    loss.backward()
    return loss.detach()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_step(model: torch.nn.Module, batch: dict, num_items: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Forward + backward (gradients kept for the comparison): (seconds, loss)."""
    _sync(model.device)
    start = time.perf_counter()
    loss = forward_backward(model, batch, num_items)
    _sync(model.device)
    return time.perf_counter() - start, loss


def timed_update(model: torch.nn.Module) -> float:
    _sync(model.device)
    start = time.perf_counter()
    model.optimizer.step()
    model.optimizer.zero_grad(set_to_none=True)
    _sync(model.device)
    return time.perf_counter() - start


def to_device(batch: dict, device: str, dtype: torch.dtype) -> dict:
    """A collated batch on the device, its images in the models' dtype."""
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if moved.get("images") is not None:
        moved["images"] = moved["images"].to(dtype)
    return moved


# torch counts the GPU kernels of SDPA only; its CPU kernel does the same work (the whole score
# matrix of each call, the causal half not subtracted, as torch counts the GPU ones)
def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(
    grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


CPU_SDPA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def count_flops(model: torch.nn.Module, batch: dict, num_items: torch.Tensor) -> int:
    """FLOPs of one forward + backward (gradients discarded)."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS)
    with counter:
        forward_backward(model, batch, num_items)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def max_grad_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    grads_b = {n: p.grad for n, p in b.named_parameters() if p.grad is not None}
    return max(
        (p.grad - grads_b[n]).abs().max().item() for n, p in a.named_parameters() if p.grad is not None
    )


@dataclass
class ModeResult:
    tokens_per_s: float  # useful tokens per second (median step time)
    step_ms: float
    flops_per_step: float  # forward + backward, mean over the steps
    positions_per_step: float  # positions computed, padding included, mean
    padding_fraction: float


MODES = ("padded", "padding_free", "packed_mask")


def attention_per_mode() -> dict[str, str]:
    """The attention of each mode: the entry point's choice, padded and padding-free."""
    chosen = default_attn_implementation()
    return {"padded": chosen, "padding_free": padding_free_attention(chosen), "packed_mask": "sdpa"}


def run(
    model_type: str,
    order: str,
    batch: int,
    steps: int,
    warmup: int,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> dict:
    """Train the copies on the same `warmup + steps` micro-batches; the figures of the last `steps`."""
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    attention = attention_per_mode()
    models = {}
    for mode in MODES:
        torch.manual_seed(seed)  # the same random weights for all
        models[mode] = build(model_type, attention[mode], device, dtype)
    image_positions = models["padded"].config.num_image_tokens
    samples = order_samples(draw_samples(batch * (warmup + steps), image_positions, seed), order, batch, seed)
    padded_collator, free_collator = DataCollatorForSupervisedDataset(pad_token_id=0), PaddingFreeCollator()
    times, flops, positions = ({mode: [] for mode in MODES} for _ in range(3))
    useful, loss_diffs, grad_diffs = [], [], []
    for step in range(warmup + steps):
        micro = samples[step * batch : (step + 1) * batch]
        lengths = [expanded_length(s, image_positions) for s in micro]
        batches = {
            mode: to_device((padded_collator if mode == "padded" else free_collator)(micro), device, dtype)
            for mode in MODES
        }
        num_items = batches["padded"]["labels"][..., 1:].ne(IGNORE_INDEX).sum()  # as the trainer counts
        seconds, losses = {}, {}
        for mode in MODES:  # in turns: the same machine state for all
            seconds[mode], losses[mode] = timed_step(models[mode], batches[mode], num_items)
        for mode in MODES[1:]:
            loss_diffs.append((losses["padded"] - losses[mode]).abs().item())
            grad_diffs.append(max_grad_diff(models["padded"], models[mode]))
        for mode in MODES:
            seconds[mode] += timed_update(models[mode])
        if step < warmup:
            continue
        useful.append(sum(lengths))
        for mode in MODES:
            times[mode].append(seconds[mode])
            flops[mode].append(count_flops(models[mode], batches[mode], num_items))
            positions[mode].append(len(micro) * max(lengths) if mode == "padded" else sum(lengths))
    tokens_per_step = statistics.mean(useful)
    results = {}
    for mode in MODES:
        median = statistics.median(times[mode])
        computed = statistics.mean(positions[mode])
        results[mode] = asdict(
            ModeResult(
                tokens_per_s=tokens_per_step / median,
                step_ms=1000 * median,
                flops_per_step=statistics.mean(flops[mode]),
                positions_per_step=computed,
                padding_fraction=1 - tokens_per_step / computed,
            )
        )
    kinds = [s["kind"] for s in samples[warmup * batch :]]
    return {
        "model": model_type,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "attention": attention,
        "dtype": str(dtype).removeprefix("torch."),
        "order": order,
        "micro_batch": batch,
        "steps": steps,
        "image_positions": image_positions,
        "llm": LLM,
        "vision": VISION,
        "lora_r": LORA_R,
        "mix": {
            kind.name: {
                "share": round(kind.share, 3),
                "images": kind.images,
                "text_tokens_full_scale": list(kind.text_tokens),
                "drawn": kinds.count(kind.name),
            }
            for kind in MIX
        },
        "useful_tokens_per_step": tokens_per_step,
        "results": results,
        "tokens_per_s_ratio": results["padding_free"]["tokens_per_s"] / results["padded"]["tokens_per_s"],
        "tokens_per_s_ratio_packed_mask": (
            results["packed_mask"]["tokens_per_s"] / results["padded"]["tokens_per_s"]
        ),
        "flops_ratio": results["padding_free"]["flops_per_step"] / results["padded"]["flops_per_step"],
        "flops_ratio_packed_mask": results["packed_mask"]["flops_per_step"]
        / results["padded"]["flops_per_step"],
        "max_loss_diff": max(loss_diffs),
        "max_grad_diff": max(grad_diffs),
        "goal": 1.3,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["fusion_llama", "llava_llama"], default="fusion_llama")
    parser.add_argument("--order", choices=["shuffled", "grouped"], default="shuffled")
    parser.add_argument("--batch", type=int, default=16, help="samples per micro-batch")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="default: float32 on cpu, else bf16",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    dtype = None if args.dtype is None else getattr(torch, args.dtype)
    report = run(args.model, args.order, args.batch, args.steps, args.warmup, device=args.device, dtype=dtype)
    if args.json:
        print(json.dumps(report, indent=2))
        return report
    print(
        f"{report['model']} on {report['device']} ({report['threads']} threads, {report['dtype']}), {args.order} micro-batches of "
        f"{args.batch}, {report['image_positions']} image positions, median of {args.steps} steps"
    )
    for name, kind in report["mix"].items():
        print(f"  mix {name:24s} share {kind['share']:.3f}  drawn {kind['drawn']}")
    for mode, r in report["results"].items():
        print(
            f"  {mode:14s} ({report['attention'][mode]:20s}) {r['step_ms']:8.1f} ms/step  {r['tokens_per_s']:8.0f} useful "
            f"tokens/s  {r['flops_per_step'] / 1e9:7.2f} GFLOP/step  padding {100 * r['padding_fraction']:.0f}%"
        )
    print(
        f"  padding-free / padded useful tokens/s: {report['tokens_per_s_ratio']:.2f} "
        f"({report['attention']['padding_free']}, what --padding_free True runs; goal >= {report['goal']}), "
        f"{report['tokens_per_s_ratio_packed_mask']:.2f} (SDPA with the packed-sequence mask)"
    )
    print(f"  max loss diff {report['max_loss_diff']:.1e}, max grad diff {report['max_grad_diff']:.1e}")
    return report


if __name__ == "__main__":
    main()
