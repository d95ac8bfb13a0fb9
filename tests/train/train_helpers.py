"""Helpers of the training tests: flags of tiny runs, in-process runs with their final weights,
the starting weights of a run, saved trained tensors."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from llava.model.builder import build_from_backbones
from llava.train.arguments import parse_arguments
from llava.train.train import seeded_init, train

# The release's spelling of the paper's recipe, and of the LLaVA-1.5 baseline.
FUSION_FLAGS = (
    "--model_type fusion_llama --use_vision_fusion True --use_mm_proj False --mm_vision_select_layer -1 "
    "--fusion_targets q,k,v --layer_ids_to_inject 0 --lora_layer_ids_to_skip 0 --fusion_lr 4e-3"
).split()
BASELINE_FLAGS = "--model_type llava_llama --mm_projector_type mlp2x_gelu --mm_vision_select_layer -2 --mm_projector_lr 4e-3".split()
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
REPO = Path(__file__).resolve().parents[2]
# `(folder, script)` of every training script under scripts/ (scripts/v1_5/common.sh is sourced by them).
TRAINING_SCRIPTS = [
    (folder, path.name)
    for folder in ("v1_5", "release")
    for path in sorted((REPO / "scripts" / folder).glob("*.sh"))
    if path.name != "common.sh"
]


class CaptureSteps(TrainerCallback):
    """Each optimizer step's learning rate and gradient norm, as the trainer logs them."""

    def __init__(self):
        self.steps: list[tuple[float, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "grad_norm" in logs:
            self.steps.append((logs["learning_rate"], logs["grad_norm"]))


class CaptureWeights(TrainerCallback):
    """Keeps a CPU copy of every parameter at the end of training, by plain model name
    (`model.layers.1.self_attn.q_proj.weight`; LoRA tensors keep their `lora_` names)."""

    def __init__(self):
        self.weights: dict[str, torch.Tensor] = {}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        for name, param in model.named_parameters():
            plain = name.removeprefix("base_model.model.").replace(".base_layer", "")
            self.weights[plain] = param.detach().to("cpu", copy=True)


def run_training(
    argv: list[str], callbacks: list[TrainerCallback] = ()
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Run the real entry point in-process (with `callbacks` too); return its summary and its final weights."""
    capture = CaptureWeights()
    summary = train(*parse_arguments(argv), callbacks=[capture, *callbacks])
    return summary, capture.weights


def initial_weights(
    model_type: str, llm: str, vision: str, seed: int = 0, **fields
) -> dict[str, torch.Tensor]:
    """The weights a run starts from (backbones + seeded new parameters)."""
    model, report = build_from_backbones(model_type, llm, vision, **fields)
    seeded_init(model, report.missing, seed)
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def trained_state(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """Adapter and non-LoRA trainable tensors a LoRA run saved."""
    run_dir = Path(run_dir)
    state = load_file(run_dir / "adapter_model.safetensors")
    state.update(load_file(run_dir / "non_lora_trainables.safetensors"))
    return state


class RunsCode:
    """Unpickling it runs `code` (a tampered checkpoint file's payload)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def write_tampered_state(path: str | Path, marker: str | Path) -> None:
    """A `torch.save` file shaped like DeepSpeed's model states whose full unpickling writes `marker`."""
    payload = RunsCode(f"open({str(marker)!r}, 'w').write('ran')")
    torch.save({"module": {"w": torch.zeros(2)}, "buffer_names": payload}, path)


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)
