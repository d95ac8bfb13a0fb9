"""Decode speed: the library's KV-cached `generate` versus a cache-free loop, and both models'
decode steps against a plain Llama of the same shape (the floor).

    python -m llava.bench.generation [--json] [--hidden-size 512 --layers 8 ...]
        [--fusion-variant concat|published] [--compile-fusion]

The cache-free loop recomputes the whole sequence for every new token, as the paper's public
release does; it is the performance anchor. Both decode greedily from the same prompt (576 image
positions by default) with random weights; the figures are measured side by side in one run.

The floor: Inverse-LLaVA, the LLaVA-1.5 baseline and a plain `LlamaForCausalLM` of the same
shape decode from prompts of the same length (the plain Llama's all text). A decode step's time
is `(t(n tokens) - t(1 token)) / (n - 1)`, which leaves the prefill (and the vision tower) out;
the three are timed in turns, `--repeats` times each, and the medians compared. At decode the
fusion adds one small term per token at its layers (the text half), the baseline nothing.

`--compile-fusion`: a second Inverse-LLaVA with the same weights and its fusion layers compiled
(`llava.model.compiled_fusion`) generates the same greedy answer in turns with the eager one,
`--repeats` times: reported are the compiled / eager time of a `generate` call (prefill and
`--new-tokens` decode steps), whether the tokens are identical, and the compile time, measured
apart (the first compiled call's time less the median compiled call's).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlamaForCausalLM

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model import FusionLlamaConfig, FusionLlamaForCausalLM, LlavaLlamaConfig, LlavaLlamaForCausalLM
from llava.model.compiled_fusion import compile_fusion
from llava.model.uncached_generation import generate_without_cache

logger = logging.getLogger(__name__)


def _llm_fields(args) -> dict:
    return {
        "vocab_size": args.vocab_size,
        "hidden_size": args.hidden_size,
        "intermediate_size": args.intermediate_size or int(2.6875 * args.hidden_size),
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads or max(1, args.hidden_size // 64),
        "max_position_embeddings": 4096,
        "pad_token_id": 0,
        "eos_token_id": None,  # decode exactly the asked number of tokens everywhere
    }


def build_bench_model(args, model_type: str = "fusion_llama"):
    """A random-weight Inverse-LLaVA (`fusion_llama`), LLaVA-1.5 (`llava_llama`) or plain Llama
    (`llama`) of the benchmark's shape."""
    side = int(round(args.image_tokens**0.5))
    if side * side != args.image_tokens:
        raise ValueError(f"--image-tokens must be a square number, got {args.image_tokens}")
    vision = CLIPVisionConfig(
        hidden_size=args.vision_hidden_size,
        intermediate_size=4 * args.vision_hidden_size,
        num_hidden_layers=args.vision_layers,
        num_attention_heads=max(1, args.vision_hidden_size // 64),
        image_size=side * args.patch_size,
        patch_size=args.patch_size,
    )
    if model_type == "fusion_llama":
        config = FusionLlamaConfig(
            **_llm_fields(args),
            vision_config=vision.to_dict(),
            mm_vision_select_layer=-1,
            fusion_variant=args.fusion_variant,
        )
        model_cls = FusionLlamaForCausalLM
    elif model_type == "llava_llama":
        config = LlavaLlamaConfig(
            **_llm_fields(args), vision_config=vision.to_dict(), mm_vision_select_layer=-2
        )
        model_cls = LlavaLlamaForCausalLM
    else:
        config, model_cls = LlamaConfig(**_llm_fields(args)), LlamaForCausalLM
    torch.manual_seed(0)
    model = model_cls._from_config(config, dtype=args.dtype, attn_implementation=args.attn_implementation)
    if model_type == "fusion_llama":
        with torch.no_grad():
            for branch in model.fusion_branches().values():
                for param in branch.parameters():
                    param.normal_(0.0, 0.02)
    return model.to(args.device).eval()


def _timed(fn, device: str) -> tuple[torch.Tensor, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def _prompt(args, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt of `--prompt-tokens` text tokens around one image placeholder, and the image."""
    images = torch.randn(1, 3, size, size, device=args.device, dtype=args.dtype)
    text = torch.randint(3, args.vocab_size, (1, args.prompt_tokens), device=args.device)
    image = torch.full((1, 1), IMAGE_TOKEN_INDEX, device=args.device)
    return torch.cat([text[:, :1], image, text[:, 1:]], dim=1), images


def decode_floor(args, fusion, image_ids, images) -> dict:
    """Decode tokens/s of Inverse-LLaVA, the baseline and a plain Llama, timed in turns."""
    n = args.new_tokens
    plain_ids = torch.randint(
        3, args.vocab_size, (1, image_ids.shape[1] - 1 + fusion.config.num_image_tokens)
    )
    calls = {
        "fusion": (fusion, {"inputs": image_ids, "images": images}),
        "baseline": (build_bench_model(args, "llava_llama"), {"inputs": image_ids, "images": images}),
        "plain": (build_bench_model(args, "llama"), {"inputs": plain_ids.to(args.device)}),
    }
    times: dict[str, dict[int, list[float]]] = {name: {1: [], n: []} for name in calls}
    for _ in range(args.repeats):
        for name, (model, inputs) in calls.items():
            for length in (1, n):
                _, seconds = _timed(
                    lambda m=model, i=inputs, k=length: m.generate(
                        **i, max_new_tokens=k, min_new_tokens=k, do_sample=False
                    ),
                    args.device,
                )
                times[name][length].append(seconds)
    rates = {name: (n - 1) / (statistics.median(t[n]) - statistics.median(t[1])) for name, t in times.items()}
    return {
        "plain_decode_tokens_per_s": rates["plain"],
        "fusion_decode_tokens_per_s": rates["fusion"],
        "baseline_decode_tokens_per_s": rates["baseline"],
        "fusion_decode_ratio": rates["fusion"] / rates["plain"],
        "baseline_decode_ratio": rates["baseline"] / rates["plain"],
        "repeats": args.repeats,
    }


def compiled_generation(args, eager, input_ids, images) -> dict:
    """The eager model against a copy with its fusion layers compiled, greedy, in turns."""
    compiled = build_bench_model(args)  # the same seed: the same weights
    compile_fusion(compiled)
    n = args.new_tokens
    greedy = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
    first, t_first = _timed(lambda: compiled.generate(input_ids, images=images, **greedy), args.device)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    tokens = {"first": first}
    for _ in range(args.repeats):
        for name, model in (("eager", eager), ("compiled", compiled)):
            tokens[name], seconds = _timed(
                lambda m=model: m.generate(input_ids, images=images, **greedy), args.device
            )
            times[name].append(seconds)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "fusion_variant": args.fusion_variant,
        "compiled_over_eager": medians["compiled"] / medians["eager"],
        "compile_seconds": t_first - medians["compiled"],
        "compiled_tokens_identical": all(torch.equal(t, tokens["eager"]) for t in tokens.values()),
    }


def run(args) -> dict:
    model = build_bench_model(args)
    input_ids, images = _prompt(args, model.config.vision_config.image_size)
    n = args.new_tokens

    model.generate(input_ids, images=images, max_new_tokens=4, do_sample=False)  # warm-up
    cached, t_cached = _timed(
        lambda: model.generate(input_ids, images=images, max_new_tokens=n, min_new_tokens=n, do_sample=False),
        args.device,
    )
    uncached, t_uncached = _timed(
        lambda: generate_without_cache(model, input_ids, images, max_new_tokens=n), args.device
    )
    result = {
        "device": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": str(args.dtype).replace("torch.", ""),
        "attn_implementation": model.config._attn_implementation,
        "hidden_size": args.hidden_size,
        "layers": args.layers,
        "image_positions": model.config.num_image_tokens,
        "prompt_positions": input_ids.shape[1] - 1 + model.config.num_image_tokens,
        "new_tokens": n,
        "cached_tokens_per_s": cached.shape[1] / t_cached,
        "uncached_tokens_per_s": uncached.shape[1] / t_uncached,
        "identical": bool(cached.shape == uncached.shape and torch.equal(cached, uncached)),
    }
    result["speedup"] = result["cached_tokens_per_s"] / result["uncached_tokens_per_s"]
    if args.compile_fusion:
        result["compiled_fusion"] = compiled_generation(args, model, input_ids, images)
    result.update(decode_floor(args, model, input_ids, images))
    return result


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--preset", choices=["small", "7b"], default="small", help="7b: Vicuna-7B / CLIP-L shapes (for a GPU)"
    )
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--intermediate-size", type=int, default=None)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default: hidden / 64)")
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--vision-hidden-size", type=int, default=64)
    parser.add_argument("--vision-layers", type=int, default=1)
    parser.add_argument("--patch-size", type=int, default=2)
    parser.add_argument("--image-tokens", type=int, default=576)
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timings per model for the decode floor")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--attn-implementation", default="sdpa", choices=["eager", "sdpa", "flash_attention_2"]
    )
    parser.add_argument("--fusion-variant", choices=["concat", "published"], default="concat")
    parser.add_argument(
        "--compile-fusion", action="store_true", help="also time generation with the fusion layers compiled"
    )
    args = parser.parse_args(argv)
    if args.new_tokens < 2 or args.repeats < 1:
        parser.error("--new-tokens must be >= 2 and --repeats >= 1")
    if args.preset == "7b":
        args.hidden_size, args.intermediate_size, args.layers, args.heads = 4096, 11008, 32, 32
        args.vision_hidden_size, args.vision_layers, args.patch_size = 1024, 24, 14
    if args.dtype is None:
        args.dtype = "float32" if args.device == "cpu" else "bfloat16"
    args.dtype = getattr(torch, args.dtype)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            logger.info("%-22s %s", key, f"{value:.2f}" if isinstance(value, float) else value)
    return result


if __name__ == "__main__":
    main()
