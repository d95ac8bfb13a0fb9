"""Command-line flags shared by every inference entry point (runners, CLIs, server)."""

from __future__ import annotations

import argparse
from typing import Any

import torch
from PIL import Image

from llava.inference.engine import LoadedModel
from llava.inference.prompting import DEFAULT_CONV_MODE, split_image_files
from llava.mm_utils import load_image

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-path", required=True, help="checkpoint folder (or hub id)")
    parser.add_argument("--model-base", default=None, help="base LLM for LoRA / projector-only checkpoints")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)"
    )
    parser.add_argument(
        "--dtype",
        choices=["auto", *DTYPES],
        default="auto",
        help="weights and activations (default auto: float32 on CPU, bfloat16 on GPUs that support it, else float16)",
    )
    parser.add_argument(
        "--conv-mode", default=DEFAULT_CONV_MODE, help=f"conversation template (default: {DEFAULT_CONV_MODE})"
    )


def load_model(args: argparse.Namespace, **options: Any) -> LoadedModel:
    """The checkpoint the model flags name; `--dtype auto` leaves the dtype to the loader's
    per-device default. `options` go to `LoadedModel.load` (e.g. `load_8bit`)."""
    dtype = None if args.dtype == "auto" else DTYPES[args.dtype]
    return LoadedModel.load(args.model_path, args.model_base, device=args.device, dtype=dtype, **options)


def add_image_file_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-file", required=True, help="image path(s), separated by --sep")
    parser.add_argument("--sep", default=",", help="separator between image files (default: ',')")


def load_image_files(args: argparse.Namespace) -> list[Image.Image]:
    """The images `--image-file` names (split on `--sep`)."""
    return [load_image(path) for path in split_image_files(args.image_file, args.sep)]


def add_decoding_arguments(
    parser: argparse.ArgumentParser, max_new_tokens: int, temperature: float = 0.0, beams: bool = True
) -> None:
    parser.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    parser.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=None)
    if beams:
        parser.add_argument("--num_beams", "--num-beams", dest="num_beams", type=int, default=1)
    parser.add_argument(
        "--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int, default=max_new_tokens
    )
