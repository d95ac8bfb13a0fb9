"""Where and how a loaded model's weights are placed: LLaVA's loader keywords, interpreted once.

LLaVA's `load_pretrained_model(..., load_8bit, load_4bit, device_map="auto", device="cuda",
use_flash_attn)` (https://github.com/haotian-liu/LLaVA, `llava/model/builder.py`): a `device`
other than `"cuda"` wins (its `device_map` becomes `{"": device}`); with `device="cuda"`, the
`device_map` decides (`"auto"` spreads over the GPUs; `"cpu"`, as its `merge_lora_weights.py`
passes, loads on the CPU). Here the whole model always goes to one device; `device=None` (this
project's runners' default) means CUDA when available, else the CPU.
"""

from __future__ import annotations

import torch

FLASH_ATTENTION = "flash_attention_2"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str | torch.device) -> torch.dtype:
    """fp32 on CPU; bf16 on GPUs that support it, else fp16 (LLaVA: always fp16)."""
    if torch.device(device).type == "cpu":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _single_device(device_map) -> str | None:
    """The one device a `device_map` names, None for `"auto"`.

    Raises:
        ValueError: a map that splits the model over several devices, or a strategy name.
    """
    if device_map is None or device_map == "auto":
        return None
    if isinstance(device_map, dict) and set(device_map) == {""}:
        device_map = device_map[""]
    if isinstance(device_map, bool):
        raise ValueError(f"device_map={device_map!r} is not a device")
    if isinstance(device_map, int):
        return f"cuda:{device_map}"
    if isinstance(device_map, torch.device):
        return str(device_map)
    if isinstance(device_map, str):
        try:
            return str(torch.device(device_map))
        except RuntimeError as error:
            raise ValueError(
                f"device_map={device_map!r}: only 'auto' or one device (e.g. 'cpu', 'cuda:0') is supported"
            ) from error
    raise ValueError(
        f"device_map={device_map!r}: splitting a model over several devices is not supported; give one device"
    )


def resolve_device(device: str | None, device_map="auto") -> str:
    """The device the whole model goes to, by LLaVA's rules (see the module docstring).

    Raises:
        RuntimeError: a CUDA device on a machine without CUDA (LLaVA's default `device="cuda"`
            included), naming what to pass instead.
        ValueError: a `device_map` that is not one device.
    """
    single = _single_device(device_map)
    if device not in (None, "cuda"):
        target = str(device)
    elif single is not None:
        target = single
    else:
        target = device or default_device()
    if torch.device(target).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {target!r} was asked for (device={device!r}, device_map={device_map!r}; LLaVA's "
            "default is 'cuda'), but CUDA is not available here: pass device='cpu' (--device cpu)"
        )
    return target


def attention_implementation(use_flash_attn: bool, attn_implementation: str | None) -> str | None:
    """LLaVA's `use_flash_attn=True` is `attn_implementation="flash_attention_2"`."""
    if not use_flash_attn:
        return attn_implementation
    if attn_implementation not in (None, FLASH_ATTENTION):
        raise ValueError(
            f"use_flash_attn=True asks for {FLASH_ATTENTION}, but attn_implementation={attn_implementation!r}"
        )
    return FLASH_ATTENTION


def quantization_config(load_8bit: bool, load_4bit: bool, device: str):
    """bitsandbytes settings of LLaVA's 8/4-bit loads (4-bit: nf4, double quantization, fp16
    compute), or None. CUDA only."""
    if not (load_8bit or load_4bit):
        return None
    if load_8bit and load_4bit:
        raise ValueError("choose one of load_8bit and load_4bit")
    if torch.device(device).type != "cuda":
        raise ValueError("4/8-bit loading needs a CUDA device (bitsandbytes)")
    from transformers import BitsAndBytesConfig

    if load_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=torch.float16,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_quant_type="nf4",
    )
