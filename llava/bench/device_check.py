"""The device check: everything a CPU cannot measure, in one command for one GPU.

    bash scripts/device_check.sh            # one H100/H200: bf16, Vicuna-7B / CLIP-L shapes
    bash scripts/device_check.sh --tiny     # the same code at tiny shapes on the CPU (CI)

Prints one JSON object (logs go to stderr). Every section runs even when an earlier one failed:
a failed section is `{"error": "<type>: <message>", "seconds": ...}`. Sections:

- `conditions`: device, dtype, library versions, whether flash-attn 2 is usable.
- `attention`: bf16 logits of eager vs SDPA vs flash-attention-2 on a right-padded batch of three
  samples of different lengths (one image each), both models (Inverse-LLaVA with the paper's
  concat layer and with the published layer), at 7B layer widths (4 layers);
  `max_rel_diff` = max |logits - eager logits| / max |eager logits| over the real positions.
- `generation`: greedy tokens of the library's `generate` with and without the KV cache, the
  same three models, in the check's dtype and in fp32.
- `train_step`: `llava.bench.train_step` (`--preset 7b` on a GPU: tokens/s, MFU, peak memory of
  the LoRA + fusion step against the baseline's).
- `padding_free`: `llava.bench.padding_free` for both models (padded vs padding-free batches
  under the attention the training entry point picks; bf16 on a GPU).
- `packed_attention`: `llava.bench.packed_attention`: the kernel of `--padding_free True` off
  flash-attention on one packed row (per-sample SDPA, and on a GPU PyTorch's varlen
  flash-attention) against SDPA with the block-diagonal mask: time and relative differences.
- `decode`: batch-1 decode tokens/s of both models and a plain Llama of the same shape
  (`llava.bench.generation.decode_floor`) against the HBM-bandwidth bound: bandwidth / bytes read
  per token (the LLM's weights without its input embedding, plus the KV cache at the mean
  position), the bandwidth from `HBM_BANDWIDTH` by the GPU's name.
- `zero3`: the real training entry point under DeepSpeed ZeRO-3 in one process for a few steps,
  over NCCL on a GPU (`torchrun --nproc_per_node 1 llava/train/train_mem.py`) and over gloo on the
  CPU (`llava.train.cpu_deepspeed_launch`), with a tiny model and the toy data set.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from transformers.utils import is_flash_attn_2_available

from llava.bench import generation, train_step
from llava.bench import packed_attention as packed_attention_bench
from llava.bench import padding_free as padding_free_bench
from llava.constants import IMAGE_TOKEN_INDEX
from llava.environment import PACKAGES, package_version

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
METHODS = ("fusion_llama", "llava_llama")
# The models of the `attention` and `generation` sections: (key, model type, fusion variant flags).
MODELS = (
    ("fusion_llama", "fusion_llama", ()),
    ("fusion_llama_published", "fusion_llama", ("--fusion-variant", "published")),
    ("llava_llama", "llava_llama", ()),
)
# HBM bandwidth in bytes/s by the GPU's name (first match wins), from NVIDIA's datasheets: H200
# SXM/NVL 4.8 TB/s; H100 NVL 3.9 TB/s; H100 PCIe 2.0 TB/s; H100 SXM 3.35 TB/s (what a plain
# "H100 80GB HBM3" reports).
HBM_BANDWIDTH = (("H200", 4.8e12), ("H100 NVL", 3.9e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12))
# Shapes of the model-level sections: `generation` flags (llava.bench.generation.parse_args).
SHAPES = {
    "tiny": {
        "model": ["--hidden-size", "64", "--layers", "2", "--vocab-size", "256", "--vision-hidden-size", "32",
                  "--vision-layers", "1", "--patch-size", "2", "--image-tokens", "16", "--prompt-tokens", "8"],
        "decode": ["--new-tokens", "6", "--repeats", "1"],
        "generate_tokens": 6, "train_preset": "tiny", "train_steps": 2, "train_warmup": 1,
        "padding_free": {"batch": 4, "steps": 2, "warmup": 1}, "zero3_steps": 2,
        "packed_attention": {"batch": 4, "image_positions": 16, "heads": 4, "kv_heads": 2, "head_dim": 16,
                             "repeats": 1},
    },
    "gpu": {
        "model": ["--hidden-size", "4096", "--intermediate-size", "11008", "--layers", "4",
                  "--vision-hidden-size", "1024", "--vision-layers", "24", "--patch-size", "14",
                  "--image-tokens", "576", "--prompt-tokens", "48"],
        "decode": ["--preset", "7b", "--new-tokens", "128", "--repeats", "3"],
        "generate_tokens": 32, "train_preset": "7b", "train_steps": 10, "train_warmup": 2,
        "padding_free": {"batch": 8, "steps": 10, "warmup": 1}, "zero3_steps": 5,
        "packed_attention": {"batch": 16, "image_positions": 576, "heads": 32, "kv_heads": 32,
                             "head_dim": 128, "repeats": 5},
    },
}  # fmt: skip
ATTENTION_TOLERANCE = 0.05  # max_rel_diff accepted between implementations in bf16 (fp16: the same)


def section(name: str, fn: Callable[[], dict]) -> dict:
    """Run one section; an exception becomes its error entry (the other sections still run)."""
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as err:  # fail soft: the report says what broke, the check goes on
        logger.error("section %s failed:\n%s", name, traceback.format_exc())
        result = {"error": f"{type(err).__name__}: {err}"}
    result["seconds"] = round(time.perf_counter() - start, 2)
    _free_memory()
    return result


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def conditions(device: str, dtype: torch.dtype, tiny: bool) -> dict:
    """Where and with what the figures were measured."""
    cuda = device.startswith("cuda")
    return {
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": str(dtype).removeprefix("torch."),
        "shapes": "tiny" if tiny else "gpu",
        "cuda": torch.version.cuda,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        if cuda
        else None,
        "flash_attention_2_usable": is_flash_attn_2_available(),
        "versions": {name: package_version(name) for name in PACKAGES},
        "python": sys.version.split()[0],
    }


def _model_args(shape: dict, device: str, dtype: torch.dtype, attn: str, extra: tuple[str, ...] = ()):
    argv = [*shape["model"], *extra, "--device", device, "--attn-implementation", attn]
    return generation.parse_args([*argv, "--dtype", str(dtype).removeprefix("torch.")])


def _build(args, model_type: str) -> torch.nn.Module:
    """`generation.build_bench_model` with the weights created on the target device."""
    with torch.device(args.device):
        return generation.build_bench_model(args, model_type)


def padded_batch(model, lengths: tuple[int, ...], device: str, seed: int = 0) -> dict:
    """Right-padded samples of `lengths` text tokens, one image placeholder each (after 2 tokens)."""
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, vocab, (n,), generator=generator)
        ids[row, 2] = IMAGE_TOKEN_INDEX
        mask[row, :n] = 1
    side = model.config.vision_config.image_size
    images = torch.randn(len(lengths), 3, side, side, generator=generator)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "images": images.to(device, model.dtype),
    }


def _real_positions(model, batch: dict) -> torch.Tensor:
    mm = model.prepare_multimodal_inputs(batch["input_ids"], batch["images"], batch["attention_mask"])
    return mm.attention_mask.bool()  # [B, T]


@torch.no_grad()
def attention(shape: dict, device: str, dtype: torch.dtype) -> dict:
    """Logits of SDPA and flash-attention-2 against eager's on one padded batch, both models."""
    implementations = ["sdpa", "flash_attention_2"]
    result: dict = {"tolerance": ATTENTION_TOLERANCE, "padding": "right", "lengths": [12, 7, 4]}
    for key, model_type, variant in MODELS:
        args = _model_args(shape, device, dtype, "eager", variant)
        model = _build(args, model_type)
        batch = padded_batch(model, tuple(result["lengths"]), device)
        real = _real_positions(model, batch)
        reference = model(**batch).logits.float()  # [B, T, V]
        scale = reference[real].abs().max()
        per_model = {}
        for implementation in implementations:
            if implementation == "flash_attention_2" and not is_flash_attn_2_available():
                per_model[implementation] = {
                    "skipped": "flash-attn 2 is not usable here (not installed or no CUDA)"
                }
                continue
            model.set_attn_implementation(implementation)
            logits = model(**batch).logits.float()
            diff = ((logits - reference)[real].abs().max() / scale).item()
            per_model[implementation] = {
                "max_rel_diff": diff,
                "within_tolerance": diff <= ATTENTION_TOLERANCE,
            }
        result[key] = per_model
        del model
        _free_memory()
    return result


@torch.no_grad()
def cached_generation(shape: dict, device: str, dtype: torch.dtype, attn: str) -> dict:
    """Greedy tokens with and without the KV cache, both models, in `dtype` and in fp32."""
    n = shape["generate_tokens"]
    greedy = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
    result: dict = {"new_tokens": n, "attn_implementation": attn}
    for run_dtype in dict.fromkeys([dtype, torch.float32]):
        run_attn = attn if run_dtype != torch.float32 or attn != "flash_attention_2" else "sdpa"
        key = str(run_dtype).removeprefix("torch.")
        for model_key, model_type, variant in MODELS:
            args = _model_args(shape, device, run_dtype, run_attn, variant)
            model = _build(args, model_type)
            batch = padded_batch(model, (10, 6), device)
            cached = model.generate(**batch, **greedy)
            uncached = model.generate(**batch, **greedy, use_cache=False)
            same = (cached == uncached).all(dim=0)  # [n]
            result[f"{model_key}/{key}"] = {
                "identical": bool(same.all()),
                "first_difference": None if same.all() else int((~same).nonzero()[0]),
                "attn_implementation": run_attn,
            }
            del model
            _free_memory()
    return result


def training_step(shape: dict, device: str) -> dict:
    """`llava.bench.train_step` at the shape's preset (7b on a GPU)."""
    return train_step.run(shape["train_preset"], shape["train_steps"], shape["train_warmup"], device)


def padding_free(shape: dict, device: str) -> dict:
    """`llava.bench.padding_free` for both models (fp32 on the CPU, bf16 on a GPU)."""
    settings = shape["padding_free"]
    return {
        model_type: padding_free_bench.run(
            model_type, "shuffled", settings["batch"], settings["steps"], settings["warmup"], device=device
        )
        for model_type in METHODS
    }


def packed_attention(shape: dict, device: str, dtype: torch.dtype) -> dict:
    """`llava.bench.packed_attention` in the check's dtype; each packed kernel's differences to
    SDPA with the block-diagonal mask against `ATTENTION_TOLERANCE`."""
    report = packed_attention_bench.run(device, dtype, **shape["packed_attention"])
    for result in report["results"].values():
        if "max_rel_diff_output" in result:
            worst = max(result["max_rel_diff_output"], result["max_rel_diff_grads"])
            result["within_tolerance"] = worst <= ATTENTION_TOLERANCE
    return report


def hbm_bandwidth(device: str) -> tuple[str, float] | None:
    """`(matched name, bytes/s)` of the GPU from `HBM_BANDWIDTH`; None off CUDA or when unknown."""
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next(((key, value) for key, value in HBM_BANDWIDTH if key in name), None)


def decode_bytes_per_token(model, positions: int) -> dict:
    """Bytes one decode step reads: the LLM's weights (tower and projector excluded; the input
    embedding too unless tied, as one row of it is read) and the KV cache at `positions`."""
    skip = ("model.vision_tower.", "model.mm_projector.")
    tied = model.config.tie_word_embeddings
    weights = sum(
        p.numel() * p.element_size()
        for name, p in model.named_parameters()
        if not name.startswith(skip) and (tied or "embed_tokens" not in name)
    )
    fusion = sum(
        p.numel() * p.element_size() for b in model.fusion_branches().values() for p in b.parameters()
    )
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = next(model.parameters()).element_size()
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * positions * element
    return {"weights": weights, "fusion_branch": fusion, "kv_cache": kv}


@torch.no_grad()
def decode(shape: dict, device: str, dtype: torch.dtype, attn: str) -> dict:
    """Batch-1 decode tokens/s (both models and a plain Llama) against the HBM-bandwidth bound."""
    args = _model_args(shape, device, dtype, attn, tuple(shape["decode"]))
    fusion = _build(args, "fusion_llama")
    ids, images = generation._prompt(args, fusion.config.vision_config.image_size)
    prompt_positions = ids.shape[1] - 1 + fusion.config.num_image_tokens
    with torch.device(device):
        rates = generation.decode_floor(args, fusion, ids, images)
    sizes = decode_bytes_per_token(fusion, prompt_positions + args.new_tokens // 2)
    plain_bytes = sizes["weights"] - sizes["fusion_branch"] + sizes["kv_cache"]
    result = {
        "attn_implementation": attn,
        "dtype": str(dtype).removeprefix("torch."),
        "hidden_size": args.hidden_size,
        "layers": args.layers,
        "prompt_positions": prompt_positions,
        "new_tokens": args.new_tokens,
        "bytes_per_token": {
            "fusion": sizes["weights"] + sizes["kv_cache"],
            "plain_and_baseline": plain_bytes,
        },
        **rates,
    }
    bandwidth = hbm_bandwidth(device)
    if bandwidth is None:
        result["bound"] = "no HBM bandwidth known for this device (CPU or an unlisted GPU)"
        return result
    name, bytes_per_s = bandwidth
    result["hbm_bandwidth"] = {
        "gpu": name,
        "bytes_per_s": bytes_per_s,
        "source": "NVIDIA datasheet (SXM figures)",
    }
    bound_fusion = bytes_per_s / result["bytes_per_token"]["fusion"]
    bound_plain = bytes_per_s / plain_bytes
    result["bound_tokens_per_s"] = {"fusion": bound_fusion, "plain_and_baseline": bound_plain}
    result["fraction_of_bound"] = {
        "fusion": rates["fusion_decode_tokens_per_s"] / bound_fusion,
        "baseline": rates["baseline_decode_tokens_per_s"] / bound_plain,
        "plain": rates["plain_decode_tokens_per_s"] / bound_plain,
    }
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def zero3(shape: dict, device: str, timeout_s: int = 300) -> dict:
    """A few ZeRO-3 steps of the training entry point in one process (NCCL on CUDA, else gloo)."""
    from llava.data.toy import toy_records, write_dataset
    from llava.tools.make_tiny_checkpoints import make_tiny_checkpoints

    cuda = device.startswith("cuda")
    with tempfile.TemporaryDirectory(prefix="device-check-zero3-") as tmp:
        root = Path(tmp)
        llm, vision = make_tiny_checkpoints(root / "tiny")
        data_path, image_folder = write_dataset(root / "toy", *toy_records())
        out = root / "run"
        flags = {
            "model_name_or_path": llm, "vision_tower": vision, "version": "v1", "data_path": data_path,
            "image_folder": image_folder, "output_dir": out, "per_device_train_batch_size": 2,
            "max_steps": shape["zero3_steps"], "save_strategy": "no", "learning_rate": "4e-3",
            "logging_steps": 1, "report_to": "none", "model_max_length": 128, "disable_tqdm": "True",
            "lora_enable": "True", "lora_r": 8, "lora_alpha": 16, "model_type": "fusion_llama",
            "mm_vision_select_layer": -1, "fusion_lr": "4e-3", "bf16": str(cuda),
            "deepspeed": REPO / "scripts" / "zero3.json",
        }  # fmt: skip
        argv = [item for key, value in flags.items() for item in (f"--{key}", str(value))]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
        launcher += ["--master_port", str(_free_port())]
        if cuda:
            command = [*launcher, str(REPO / "llava" / "train" / "train_mem.py"), *argv]
        else:
            accelerator = root / "accelerator.json"
            accelerator.write_text(json.dumps({"use_configured_state": True}))
            command = [*launcher, "-m", "llava.train.cpu_deepspeed_launch", *argv]
            command += ["--accelerator_config", str(accelerator)]
        # The repository on the path: train_mem.py runs as a script, also where it is not installed.
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": path}
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-5:]
            return {"error": f"the ZeRO-3 run exited with {proc.returncode}: {' | '.join(tail)}"}
        summary = json.loads((out / "training_summary.json").read_text())
    losses = summary["losses"]
    return {
        "backend": "nccl" if cuda else "gloo",
        "launcher": "torchrun --nproc_per_node 1 "
        + ("llava/train/train_mem.py" if cuda else "-m llava.train.cpu_deepspeed_launch"),
        "model": "the tiny fusion_llama (llava.tools.make_tiny_checkpoints) on the toy data set",
        "bf16": cuda,
        "world_size": summary["world_size"],
        "zero_stage": summary["zero_stage"],
        "partitioned_parameters": summary.get("partitioned_parameters"),
        "steps": len(losses),
        "losses": losses,
        "finite": all(loss == loss and abs(loss) != float("inf") for loss in losses),
    }


def run(tiny: bool, device: str | None = None) -> dict:
    """Every section, in order; returns the report."""
    device = device or ("cpu" if tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run `bash scripts/device_check.sh --tiny` on a CPU")
    shape = SHAPES["tiny" if tiny else "gpu"]
    dtype = torch.bfloat16
    best = "flash_attention_2" if is_flash_attn_2_available() else "sdpa"
    start = time.perf_counter()
    report = {"conditions": section("conditions", lambda: conditions(device, dtype, tiny))}
    report["attention"] = section("attention", lambda: attention(shape, device, dtype))
    report["generation"] = section("generation", lambda: cached_generation(shape, device, dtype, best))
    report["train_step"] = section("train_step", lambda: training_step(shape, device))
    report["padding_free"] = section("padding_free", lambda: padding_free(shape, device))
    report["packed_attention"] = section("packed_attention", lambda: packed_attention(shape, device, dtype))
    report["decode"] = section("decode", lambda: decode(shape, device, dtype, best))
    report["zero3"] = section("zero3", lambda: zero3(shape, device))
    report["failed_sections"] = [name for name, value in report.items() if "error" in value]
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (what CI runs)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON object only
        report = run(args.tiny, args.device)
    print(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
