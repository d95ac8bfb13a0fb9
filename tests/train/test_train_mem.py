"""`llava/train/train_mem.py` (the scripts' entry point) picks FlashAttention-2 only where it is
usable and SDPA otherwise; before, it forced FlashAttention-2 and failed on any machine without it."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers.utils import is_flash_attn_2_available

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.builder import load_pretrained_model
from llava.train import train_mem
from tests.train.train_helpers import BASELINE_FLAGS, FUSION_FLAGS, TRAINING_SCRIPTS

REPO = Path(__file__).resolve().parents[2]


def test_default_attention_is_flash_attention_where_usable_else_sdpa():
    expected = "flash_attention_2" if is_flash_attn_2_available() else "sdpa"
    assert train_mem.default_attn_implementation() == expected


@pytest.mark.skipif(is_flash_attn_2_available(), reason="flash-attn is usable here: nothing falls back")
def test_train_mem_trains_with_sdpa_without_flash_attn(run_flags, tmp_path, caplog):
    argv = run_flags(tmp_path, *FUSION_FLAGS, "--max_steps", "2", "--save_strategy", "no")
    with caplog.at_level(logging.INFO, logger="llava.train.train_mem"):
        summary = train_mem.main(argv)
    assert "default attention: sdpa" in caplog.text
    assert len(summary["losses"]) == 2


@pytest.mark.skipif(is_flash_attn_2_available(), reason="flash-attn is usable here")
def test_explicit_flash_attention_is_still_refused_without_flash_attn(run_flags, tmp_path):
    """`--attn_implementation flash_attention_2` overrides the default, and the library refuses it
    loudly where flash-attn is missing (nothing is substituted)."""
    argv = run_flags(
        tmp_path, *FUSION_FLAGS, "--max_steps", "1", "--attn_implementation", "flash_attention_2"
    )
    with pytest.raises(ImportError, match="[Ff]lash"):
        train_mem.main(argv)


@pytest.mark.parametrize("model_flags", [FUSION_FLAGS, BASELINE_FLAGS], ids=["fusion", "baseline"])
def test_bf16_training_run_on_the_cpu(run_flags, tiny_checkpoints, tmp_path, model_flags):
    """`--bf16 True` (the scripts' setting; `--use_cpu True` as the Trainer asks for bf16 on a CPU)
    through the scripts' entry point: the model is built in bf16, trains with finite, falling
    losses and saves bf16 trained tensors; the run loads on its base in bf16 and answers."""
    argv = run_flags(
        tmp_path,
        *model_flags,
        "--max_steps",
        "6",
        "--bf16",
        "True",
        "--use_cpu",
        "True",
        "--save_strategy",
        "no",
    )
    summary = train_mem.main(argv)
    losses = summary["losses"]
    assert len(losses) == 6 and all(math.isfinite(loss) for loss in losses)
    assert min(losses[-2:]) < losses[0]
    saved = load_file(tmp_path / "non_lora_trainables.safetensors")
    assert saved and {tensor.dtype for tensor in saved.values()} == {torch.bfloat16}
    _, model, _, _ = load_pretrained_model(
        str(tmp_path), model_base=tiny_checkpoints[0], device="cpu", dtype=torch.bfloat16
    )
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    side = model.get_vision_tower().config.image_size
    answer = model.generate(
        torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 7]]),
        images=torch.randn(1, 3, side, side),
        max_new_tokens=3,
        min_new_tokens=3,
    )
    assert answer.shape == (1, 3)


@pytest.mark.parametrize(("folder", "script"), TRAINING_SCRIPTS, ids=[s for _, s in TRAINING_SCRIPTS])
def test_every_training_script_leaves_the_attention_to_train_mem(script_argv, folder, script, tmp_path):
    """Each script launches `llava/train/train_mem.py` (read through a stand-in launcher) without
    `--attn_implementation`, so flash-attention-2 or SDPA is train_mem's choice."""
    argv = script_argv(folder, script, tmp_path)
    assert argv and "--attn_implementation" not in argv
