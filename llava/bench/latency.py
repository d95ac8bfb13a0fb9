"""Latency profile: image processing, vision encoding, prefill and decode timed apart, for
Inverse-LLaVA, the LLaVA-1.5 baseline and their plain LLM, at batch 1 and 4.

    python -m llava.bench.latency [--json] [--repeats 10 --warmups 2 --new-tokens 32 --threads 2]
    python -m llava.bench.latency --checkpoint fusion=DIR --checkpoint baseline=DIR --checkpoint llm=DIR

Without `--checkpoint`, three checkpoints with random weights are built offline from one tiny LLM
and one tiny CLIP tower (`llava.tools.make_tiny_checkpoints`); with it, only the named ones are
profiled. Every model is loaded and run as users run it, through `llava.inference`'s engine
(`LoadedModel`): the prompt is the conversation template's (`prompt_ids`), the images go through
`encode_images`, and the answer through `complete`, one left-padded `generate` call with the KV
cache. The stages, per call:

- image processing: `encode_images`, i.e. `process_images` (pad to square, resize, normalise) and
  the copy to the device, of each row's image (a random RGB image of `--image-width x
  --image-height`);
- vision encoding: the model's `prepare_multimodal_inputs` on those pixels (the vision tower, the
  projector or the fusion's vision stream, the placeholders expanded). It runs inside the prefill
  too, and is timed apart only to show its share of it;
- prefill: from the call to `complete` until its first token is chosen (the first forward, which
  builds the KV cache, with the vision encoding in it);
- decode: the time of one of the following greedy steps (a step adds one token to each row).

The step times are read by the engine's own per-step check (`complete(cancelled=...)`, asked
after every step), so the timed call is exactly the one users make. EOS is ignored (the loaded
model's `generation_config.eos_token_id` set to None), so every call decodes `--new-tokens`
tokens. The plain LLM reads the same prompt with the image's positions filled by text tokens, so
all three attend over the same number of positions. The models are timed in turns, after
`--warmups` untimed calls each; each figure is the median and interquartile range over
`--repeats` calls. The result lists the conditions: machine, load, threads, device, dtype, sizes
and library versions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.constants import IMAGE_TOKEN_INDEX
from llava.environment import describe_environment, environment_line
from llava.inference import DEFAULT_CONV_MODE, DecodingSettings, LoadedModel, open_conversation
from llava.inference.arguments import DTYPES
from llava.inference.prompting import with_image_tokens
from llava.model.builder import build_from_backbones
from llava.model.vision_tower import load_image_processor
from llava.tools.make_tiny_checkpoints import make_llm, make_vision_tower

logger = logging.getLogger(__name__)

MODELS = {"fusion": "fusion_llama", "baseline": "llava_llama", "llm": None}  # name -> model type
BATCH_SIZES = (1, 4)
QUESTION = "What is in the image? Describe the picture in detail."
STAGES = ("image_processing", "vision_encoding", "prefill", "decode")


def build_checkpoints(
    folder: Path, hidden_size: int, layers: int, vision_size: int, patch_size: int, seed: int = 0
) -> dict[str, Path]:
    """The three checkpoints of `MODELS` with random weights: one tiny LLM (`llm`) and the two
    multimodal models built on it and one tiny CLIP tower, their new parts drawn at random."""
    llm = make_llm(folder, seed, hidden_size=hidden_size, num_layers=layers)
    vision = make_vision_tower(folder, seed, image_size=vision_size, patch_size=patch_size)
    paths = {"llm": llm}
    for name, model_type in MODELS.items():
        if model_type is None:
            continue
        model, report = build_from_backbones(model_type, str(llm), str(vision))
        generator = torch.Generator().manual_seed(seed)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key in report.missing:
                params[key].copy_(torch.randn(params[key].shape, generator=generator) * 0.2)
        paths[name] = folder / f"bench-{name}"
        model.save_pretrained(paths[name])
        AutoTokenizer.from_pretrained(llm).save_pretrained(paths[name])
        load_image_processor(vision).save_pretrained(paths[name])
    return paths


class StepClock(threading.Event):
    """A cancellation event that is never set and notes when it is asked: the engine asks after
    every generated step (`LoadedModel.complete`'s `cancelled`), so its stamps are the times at
    which each step's token was chosen."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.cuda = device.type == "cuda"
        self.stamps: list[float] = []

    def is_set(self) -> bool:
        _synchronize(self.cuda)
        self.stamps.append(time.perf_counter())
        return super().is_set()


def _synchronize(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


@dataclass
class Case:
    """One model at one batch size: its prompts (equal in length, so no padding) and images."""

    name: str
    engine: LoadedModel
    prompts: list[list[int]]
    images: list[Image.Image]  # one per row; empty for the plain LLM

    @property
    def batch(self) -> int:
        return len(self.prompts)

    @property
    def cuda(self) -> bool:
        return self.engine.model.device.type == "cuda"


def measure(case: Case, settings: DecodingSettings) -> dict[str, float]:
    """One timed call of each stage, in milliseconds (decode: per step)."""
    engine, times = case.engine, {}
    pixels: list[torch.Tensor | None] = [None] * case.batch
    if case.images:
        _synchronize(case.cuda)
        start = time.perf_counter()
        pixels = [engine.encode_images([image]) for image in case.images]
        _synchronize(case.cuda)
        times["image_processing"] = 1e3 * (time.perf_counter() - start)
        input_ids = torch.tensor(case.prompts, device=engine.model.device)  # [B, L], no padding
        with torch.no_grad():
            start = time.perf_counter()
            engine.model.prepare_multimodal_inputs(input_ids, torch.cat(pixels), padding_side="left")
            _synchronize(case.cuda)
        times["vision_encoding"] = 1e3 * (time.perf_counter() - start)
    clock = StepClock(engine.model.device)
    _synchronize(case.cuda)
    start = time.perf_counter()
    completions = engine.complete(
        case.prompts, pixels, settings, cancelled=[clock] + [None] * (case.batch - 1)
    )
    steps = clock.stamps
    if len(steps) != settings.max_new_tokens or any(
        c.completion_tokens != settings.max_new_tokens for c in completions
    ):
        raise RuntimeError(
            f"{case.name}: expected {settings.max_new_tokens} generated steps, got {len(steps)} "
            f"(tokens per row: {[c.completion_tokens for c in completions]})"
        )
    times["prefill"] = 1e3 * (steps[0] - start)
    times["decode"] = 1e3 * (steps[-1] - steps[0]) / (len(steps) - 1)
    return times


def summarise(values: list[float]) -> dict[str, float]:
    """Median and interquartile range (inclusive quartiles) of a stage's timings."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median_ms": median, "iqr_ms": q3 - q1, "min_ms": min(values), "max_ms": max(values)}


def _random_image(width: int, height: int, seed: int) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator)
    return Image.fromarray(noise.numpy(), "RGB")


def prepare_cases(engines: dict[str, LoadedModel], args: argparse.Namespace) -> list[Case]:
    """Every model at every batch size: the template's prompt of `QUESTION`, with one image for a
    multimodal model; the plain LLM's image positions filled with the id of the word `image`."""
    image_positions = max(
        (engine.image_positions for engine in engines.values() if engine.image_processor is not None),
        default=0,
    )
    images = [_random_image(args.image_width, args.image_height, seed) for seed in range(max(BATCH_SIZES))]
    cases = []
    for name, engine in engines.items():
        multimodal = engine.image_processor is not None
        conv = open_conversation(args.conv_mode, with_image_tokens(QUESTION, 1))
        ids = engine.prompt_ids(conv)
        if not multimodal:
            filler = engine.tokenizer("image", add_special_tokens=False).input_ids[-1]
            at = ids.index(IMAGE_TOKEN_INDEX)
            ids = ids[:at] + [filler] * image_positions + ids[at + 1 :]
        engine.check_fits(ids, args.new_tokens)
        for batch in BATCH_SIZES:
            cases.append(Case(name, engine, [ids] * batch, images[:batch] if multimodal else []))
    return cases


def _describe_model(engine: LoadedModel) -> dict:
    config = engine.model.config
    return {
        "class": type(engine.model).__name__,
        "parameters": sum(p.numel() for p in engine.model.parameters()),
        "hidden_size": config.hidden_size,
        "layers": config.num_hidden_layers,
        "image_positions": engine.image_positions if engine.image_processor is not None else 0,
        "attn_implementation": config._attn_implementation,
    }


def _hardware(device: torch.device) -> dict:
    cpu = None
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
    }


def profile(engines: dict[str, LoadedModel], args: argparse.Namespace) -> dict:
    """The profile of every model at batch 1 and 4, and its conditions."""
    load_before = os.getloadavg()
    settings = DecodingSettings(max_new_tokens=args.new_tokens)
    for engine in engines.values():
        engine.model.generation_config.eos_token_id = None  # decode exactly --new-tokens tokens
    cases = prepare_cases(engines, args)
    for _ in range(args.warmups):
        for case in cases:
            measure(case, settings)
    timings: list[dict[str, list[float]]] = [{} for _ in cases]
    for _ in range(args.repeats):
        for case, collected in zip(cases, timings, strict=True):
            for stage, ms in measure(case, settings).items():
                collected.setdefault(stage, []).append(ms)
    rows = []
    for case, collected in zip(cases, timings, strict=True):
        stages = {stage: summarise(collected[stage]) for stage in STAGES if stage in collected}
        rows.append(
            {
                "model": case.name,
                "batch": case.batch,
                "prompt_positions": case.engine.prompt_length(case.prompts[0]),
                "stages": stages,
                "decode_tokens_per_s": case.batch * 1e3 / stages["decode"]["median_ms"],
            }
        )
    device = next(iter(engines.values())).model.device
    conditions = {
        "device": str(device),
        "dtype": str(next(iter(engines.values())).model.dtype).replace("torch.", ""),
        "new_tokens": args.new_tokens,
        "image_size": [args.image_width, args.image_height],
        "warmups": args.warmups,
        "repeats": args.repeats,
        "checkpoints": args.checkpoint_sources,
        "models": {name: _describe_model(engine) for name, engine in engines.items()},
        "hardware": _hardware(device),
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "environment": describe_environment(),
    }
    return {"rows": rows, "conditions": conditions}


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    dtype = None if args.dtype == "auto" else DTYPES[args.dtype]
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        paths = dict(args.checkpoint)
        if len(paths) != len(args.checkpoint):
            raise ValueError(f"--checkpoint names a model twice: {[name for name, _ in args.checkpoint]}")
        args.checkpoint_sources = dict(paths) if paths else "random tiny checkpoints (built offline)"
        if not paths:
            paths = build_checkpoints(
                Path(tmp), args.hidden_size, args.layers, args.vision_size, args.patch_size
            )
        engines = {
            name: LoadedModel.load(str(paths[name]), device=args.device, dtype=dtype)
            for name in MODELS
            if name in paths
        }
        return profile(engines, args)


def _format(stage: dict | None) -> str:
    return "-" if stage is None else f"{stage['median_ms']:9.2f} ({stage['iqr_ms']:.2f})"


def report(result: dict) -> None:
    """The table (median (IQR) in ms) and its conditions, through the logger."""
    header = ("model", "batch", "positions", *STAGES, "decode tok/s")
    logger.info("%-9s %5s %9s %20s %20s %20s %20s %12s", *header)
    for row in result["rows"]:
        logger.info(
            "%-9s %5d %9d %20s %20s %20s %20s %12.1f",
            row["model"],
            row["batch"],
            row["prompt_positions"],
            *(_format(row["stages"].get(stage)) for stage in STAGES),
            row["decode_tokens_per_s"],
        )
    conditions = result["conditions"]
    logger.info(
        "median (IQR) ms over %d calls after %d warm-ups; decode per step; %s, %s, %d new tokens, "
        "%dx%d images",
        conditions["repeats"],
        conditions["warmups"],
        conditions["device"],
        conditions["dtype"],
        conditions["new_tokens"],
        *conditions["image_size"],
    )
    hardware = conditions["hardware"]
    logger.info(
        "machine: %s, %d CPU(s)%s; load average (1 min) before %.2f, after %.2f",
        hardware["cpu"],
        hardware["cpu_count"],
        f", {hardware['gpu']} (CUDA {hardware['cuda']})" if hardware["gpu"] else "",
        conditions["load_average_1min"]["before"],
        conditions["load_average_1min"]["after"],
    )
    logger.info("environment: %s", environment_line(conditions["environment"]))
    for name, model in conditions["models"].items():
        logger.info("%s: %s", name, model)


def _checkpoint(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or name not in MODELS or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR with NAME one of {list(MODELS)}, got {value!r}")
    return name, path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument(
        "--checkpoint",
        type=_checkpoint,
        action="append",
        default=[],
        help="NAME=DIR (NAME: fusion, baseline or llm), repeatable; default: build all three, random and tiny",
    )
    parser.add_argument("--hidden-size", type=int, default=256, help="built checkpoints' LLM width")
    parser.add_argument("--layers", type=int, default=4, help="built checkpoints' LLM layers")
    parser.add_argument("--vision-size", type=int, default=96, help="built tower's input side in pixels")
    parser.add_argument("--patch-size", type=int, default=8, help="built tower's patch side")
    parser.add_argument("--image-width", type=int, default=640, help="input images' width")
    parser.add_argument("--image-height", type=int, default=480, help="input images' height")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--warmups", type=int, default=2, help="untimed calls per model and batch size")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per model and batch size")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto")
    parser.add_argument("--conv-mode", default=DEFAULT_CONV_MODE)
    args = parser.parse_args(argv)
    if args.new_tokens < 2 or args.repeats < 2 or args.warmups < 0 or args.threads < 1:
        parser.error("--new-tokens and --repeats must be >= 2, --warmups >= 0 and --threads >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("transformers").setLevel(logging.WARNING)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        report(result)
    return result


if __name__ == "__main__":
    main()
