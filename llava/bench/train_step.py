"""Training-step cost of Inverse-LLaVA versus the LLaVA-1.5 baseline, side by side in one run.

    python -m llava.bench.train_step [--preset cpu|7b] [--steps N] [--json]
        [--fusion-variant concat|published] [--compile-fusion]

Both models get identical inputs (per sample: one image of P positions + T text tokens, batch B),
random weights, and their real training recipes (LoRA on the LLM; the fusion branch or the
projector fully trained; AdamW). One measured step = forward + backward + optimizer step; the two
models alternate step by step so that machine noise hits both alike. Reported: median step time,
tokens/s, the fusion/baseline ratio (target <= 1.05), activation memory saved for backward, and on
CUDA the peak allocated memory of a step and the MFU (6 x parameters x tokens / time / peak FLOPs).

`--compile-fusion` adds a third model, Inverse-LLaVA with its fusion layers compiled
(`llava.model.compiled_fusion`), the same weights as the eager one, in the same turns: reported
are its step time against the eager one's (`compiled_over_eager`) and the compile time, measured
apart (its first step's time less its median step's). `--fusion-variant` picks the fusion layer
(the paper's `concat`, or the authors' `published` one).

Presets: `cpu` (small, minutes on a laptop core), `tiny` (seconds: the device check's CPU run, bf16
with activation checkpointing like `7b`) and `7b` (Vicuna-7B + CLIP-L/336 shapes: 576
image positions + 128 text tokens, bf16, LoRA r=128, activation checkpointing; needs a GPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model import FusionLlamaConfig, FusionLlamaForCausalLM, LlavaLlamaConfig, LlavaLlamaForCausalLM
from llava.model.compiled_fusion import compile_fusion
from llava.train.arguments import RunSpec
from llava.train.recipe import apply_recipe, parameter_groups

logger = logging.getLogger(__name__)

PRESETS = {
    "cpu": {
        "llm": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                    num_key_value_heads=8, vocab_size=2000),
        "vision": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                       image_size=112, patch_size=14),
        "text_tokens": 32, "batch": 2, "lora_r": 16, "dtype": "float32", "checkpointing": False,
    },
    "tiny": {
        "llm": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=4, vocab_size=256),
        "vision": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                       image_size=32, patch_size=8),
        "text_tokens": 16, "batch": 2, "lora_r": 4, "dtype": "bfloat16", "checkpointing": True,
    },
    "7b": {
        "llm": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=32, vocab_size=32000),
        "vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=336, patch_size=14),
        "text_tokens": 128, "batch": 4, "lora_r": 128, "dtype": "bfloat16", "checkpointing": True,
    },
}  # fmt: skip
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16


@dataclass
class Measured:
    name: str
    step_ms: float
    tokens_per_s: float
    saved_activation_mb: float
    peak_step_mb: float | None
    trained_parameters: int
    total_parameters: int
    mfu: float | None = None


def build(model_type: str, preset: dict, device: str, fusion_variant: str = "concat") -> torch.nn.Module:
    """A randomly initialised model of the preset's shapes with its training recipe applied."""
    dtype = getattr(torch, preset["dtype"])
    common = dict(**preset["llm"], vision_config=preset["vision"], attn_implementation="sdpa")
    if model_type == "fusion_llama":
        config = FusionLlamaConfig(**common, mm_vision_select_layer=-1, fusion_variant=fusion_variant)
        cls = FusionLlamaForCausalLM
        lora_skip = config.fusion_layer_ids
    else:
        config, cls = LlavaLlamaConfig(**common, mm_projector_type="mlp2x_gelu"), LlavaLlamaForCausalLM
        lora_skip = []
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    model.config.use_cache = False
    lora = {
        "lora_r": preset["lora_r"],
        "lora_alpha": 2 * preset["lora_r"],
        "lora_dropout": 0.05,
        "skip_layers": lora_skip,
    }
    spec = RunSpec(
        model_type=model_type, config_fields={}, lora=lora, projector_only=False, freeze_backbone=False
    )
    model, plan = apply_recipe(model, spec)
    if preset["checkpointing"]:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    model.optimizer = torch.optim.AdamW(parameter_groups(model, plan, 2e-4, 0.0), lr=2e-4)
    return model


def make_batch(preset: dict, num_image_tokens: int, device: str, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    batch, text = preset["batch"], preset["text_tokens"]
    vocab = preset["llm"]["vocab_size"]
    ids = torch.randint(3, vocab, (batch, text + 1), generator=generator)  # [B, 1 + T]
    ids[:, 8] = IMAGE_TOKEN_INDEX  # one image after a short prefix: P + T positions per sample
    labels = ids.clone()
    labels[:, :9] = IGNORE_INDEX
    side = preset["vision"]["image_size"]
    images = torch.randn(batch, 3, side, side, generator=generator)  # [B, 3, H, W]
    return {"input_ids": ids.to(device), "labels": labels.to(device), "images": images.to(device)}


@contextmanager
def saved_activations():
    """Counts the bytes autograd saves for backward inside the block."""
    total = [0]

    def pack(tensor: torch.Tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield total


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_step(model: torch.nn.Module, batch: dict, device: str) -> tuple[float, int, float | None]:
    """One forward + backward + optimizer step: (seconds, bytes saved for backward, peak step MB)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    _sync(device)
    start = time.perf_counter()
    with saved_activations() as saved:
        loss = model(**batch).loss
    loss.backward()
    model.optimizer.step()
    model.optimizer.zero_grad(set_to_none=True)
    _sync(device)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20 if device.startswith("cuda") else None
    return seconds, saved[0], peak


def _peak_flops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def run(
    preset_name: str,
    steps: int,
    warmup: int,
    device: str,
    fusion_variant: str = "concat",
    compiled: bool = False,
) -> dict:
    if compiled and warmup < 1:
        raise ValueError("compiled: warmup must be at least 1 (the compiled model's first step compiles)")
    preset = PRESETS[preset_name]
    torch.manual_seed(0)
    models = {
        "fusion": build("fusion_llama", preset, device, fusion_variant),
        "baseline": build("llava_llama", preset, device),
    }
    compile_seconds = None
    if compiled:
        torch.manual_seed(0)  # the eager fusion model's weights
        models["fusion_compiled"] = build("fusion_llama", preset, device, fusion_variant)
        compile_fusion(models["fusion_compiled"])
    num_image_tokens = models["fusion"].config.num_image_tokens
    batch = make_batch(preset, num_image_tokens, device)
    tokens = preset["batch"] * (num_image_tokens + preset["text_tokens"])
    times: dict[str, list[float]] = {name: [] for name in models}
    saved: dict[str, int] = {}
    peaks: dict[str, float | None] = {}
    for step in range(warmup + steps):
        for name, model in models.items():  # alternate: the same machine state for all
            seconds, saved[name], peak = train_step(model, batch, device)
            peaks[name] = peak if peaks.get(name) is None else max(peaks[name], peak)
            if name == "fusion_compiled" and step == 0:
                compile_seconds = seconds  # the step that compiled, less a step below
            elif step >= warmup:
                times[name].append(seconds)
    peak_flops = _peak_flops(device)
    results = {}
    for name, model in models.items():
        median = statistics.median(times[name])
        n_params = sum(p.numel() for p in model.parameters())
        results[name] = Measured(
            name=name,
            step_ms=1000 * median,
            tokens_per_s=tokens / median,
            saved_activation_mb=saved[name] / 2**20,
            peak_step_mb=peaks[name],
            trained_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
            total_parameters=n_params,
            mfu=(6 * n_params * tokens / median / peak_flops) if peak_flops else None,
        ).__dict__
    ratio = results["fusion"]["step_ms"] / results["baseline"]["step_ms"]
    report = {
        "preset": preset_name,
        "fusion_variant": fusion_variant,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "batch": preset["batch"],
        "image_positions": num_image_tokens,
        "text_tokens": preset["text_tokens"],
        "steps": steps,
        "results": results,
        "fusion_over_baseline": ratio,
        "target": 1.05,
        "target_met": ratio <= 1.05,
    }
    if compiled:
        report["compiled_over_eager"] = results["fusion_compiled"]["step_ms"] / results["fusion"]["step_ms"]
        report["compile_seconds"] = compile_seconds - results["fusion_compiled"]["step_ms"] / 1000
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=None, help="default: 7b on CUDA, else cpu"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--fusion-variant", choices=["concat", "published"], default="concat")
    parser.add_argument(
        "--compile-fusion", action="store_true", help="also time the fusion layers compiled (torch.compile)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.compile_fusion and args.warmup < 1:
        parser.error("--compile-fusion needs --warmup >= 1 (the first step compiles)")
    logging.basicConfig(level=logging.WARNING)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    report = run(
        args.preset or ("7b" if device.startswith("cuda") else "cpu"),
        args.steps,
        args.warmup,
        device,
        args.fusion_variant,
        args.compile_fusion,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return report
    print(
        f"preset {report['preset']} on {report['device']} ({report['threads']} threads): batch {report['batch']} x "
        f"({report['image_positions']} image positions + {report['text_tokens']} text tokens), median of {args.steps}"
    )
    for name, r in report["results"].items():
        peak = f", peak step {r['peak_step_mb']:.0f} MB" if r["peak_step_mb"] is not None else ""
        mfu = f", MFU {100 * r['mfu']:.1f}%" if r["mfu"] is not None else ""
        print(
            f"  {name:8s} {r['step_ms']:9.1f} ms/step  {r['tokens_per_s']:10.0f} tokens/s  "
            f"saved activations {r['saved_activation_mb']:.1f} MB{peak}{mfu}  "
            f"trained {r['trained_parameters']:,} / {r['total_parameters']:,} parameters"
        )
    verdict = "met" if report["target_met"] else "NOT met"
    print(f"  fusion / baseline step time: {report['fusion_over_baseline']:.3f} (target <= 1.05: {verdict})")
    if args.compile_fusion:
        print(
            f"  fusion ({report['fusion_variant']}) compiled / eager step time: {report['compiled_over_eager']:.3f}; "
            f"compile time {report['compile_seconds']:.1f} s"
        )
    return report


if __name__ == "__main__":
    main()
