"""Entry point for the `deepspeed` launcher (as LLaVA's `train_mem.py`), with FlashAttention-2
where it is installed and usable (`pip install -e ".[gpu]"` on a CUDA machine) and PyTorch's SDPA
otherwise; `--attn_implementation` overrides either.

    deepspeed llava/train/train_mem.py --deepspeed scripts/zero2.json ...
"""

from __future__ import annotations

import logging

from transformers.utils import is_flash_attn_2_available

from llava.cli_errors import run_command
from llava.model.placement import FLASH_ATTENTION
from llava.train.train import main as train_main

logger = logging.getLogger(__name__)
SDPA = "sdpa"


def default_attn_implementation() -> str:
    """`flash_attention_2` when transformers finds flash-attn 2 usable (the package installed and
    a CUDA device present), else `sdpa`."""
    return FLASH_ATTENTION if is_flash_attn_2_available() else SDPA


def main(argv: list[str] | None = None) -> dict:
    """`llava.train.train.main` with the attention chosen by `default_attn_implementation`."""
    attention = default_attn_implementation()
    logger.info("default attention: %s (used unless --attn_implementation is given)", attention)
    return train_main(argv, default_attn_implementation=attention)


if __name__ == "__main__":
    run_command(main)
