"""Command-line flags shared by every inference entry point (runners, CLIs, server)."""

from __future__ import annotations

import argparse

import torch

from llava.inference.prompting import DEFAULT_CONV_MODE

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


def model_dtype(args: argparse.Namespace) -> torch.dtype | None:
    """The `--dtype` flag as a torch dtype; None for `auto` (the loader's per-device default)."""
    return None if args.dtype == "auto" else DTYPES[args.dtype]


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
