"""The fusion layers compiled with `torch.compile`, and nothing else of the model
(`--compile_fusion True` in training; `compile_fusion(model)` for inference).

Each `self_attn.fusion` module (the paper's layer and its ablations, the release's, the published
one) is compiled in place with `nn.Module.compile`: the module keeps its parameters, its name and
its hooks, so state-dict keys, checkpoints, LoRA and the optimizer's parameter groups are
unchanged. The selection of image and text positions (`llava.model.fusion_layer.image_rows`:
counts that depend on the mask's values) stays eager; the layer's arithmetic after it is
compiled with dynamic shapes, so new sequence lengths and image counts do not recompile.

Whether it pays depends on the device: measure with `llava.bench.train_step --compile-fusion` and
`llava.bench.generation --compile-fusion` (docs/performance.md). On a CPU, inductor needs a C++
compiler (`g++`).
"""

from __future__ import annotations

import logging
import shutil

import torch

from llava.cli_errors import UserError
from llava.model.fusion import FUSION_MODULES

logger = logging.getLogger(__name__)


class CompileUnavailableError(UserError, RuntimeError):
    """`torch.compile` cannot run here (no C++ compiler for inductor's CPU code)."""


def fusion_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every fusion layer of `model` (under LoRA wrapping too), in module order."""
    return [module for module in model.modules() if isinstance(module, FUSION_MODULES)]


def compile_fusion(model: torch.nn.Module, mode: str | None = None) -> int:
    """Compile every fusion layer of `model` in place (`torch.compile`, dynamic shapes, inductor;
    `mode` is torch.compile's, e.g. "max-autotune"); returns how many. The first calls compile
    (seconds to minutes); later ones reuse the code."""
    modules = fusion_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no fusion layers to compile (--compile_fusion)")
    on_cpu = any(p.device.type == "cpu" for m in modules for p in m.parameters())
    if on_cpu and shutil.which("g++") is None and shutil.which("c++") is None:
        raise CompileUnavailableError(
            "torch.compile on a CPU needs a C++ compiler (g++ or c++ on PATH) for inductor's code"
        )
    for module in modules:
        module.compile(dynamic=True, mode=mode)
    logger.info("compiled %d fusion layer(s) with torch.compile (dynamic shapes)", len(modules))
    return len(modules)
