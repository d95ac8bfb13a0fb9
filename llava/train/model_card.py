"""The model card (`README.md`) written with every checkpoint training saves, as users of a model
hub expect: what the checkpoint is, what trained it (the command), the variant, the base models,
and how to load it. Its YAML header uses the hub's model-card fields (`base_model`,
`library_name`, `pipeline_tag`, `tags`)."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedConfig

MODEL_CARD = "README.md"
_PAPER = "arXiv 2508.12466"


@dataclass(frozen=True)
class TrainingCard:
    """What a run knows about itself when it saves: the command and its base models."""

    command: str
    base_llm: str
    vision_tower: str

    @classmethod
    def from_argv(cls, argv: Sequence[str] | None, base_llm: str, vision_tower: str) -> TrainingCard:
        """`argv`: the training flags (None: this process's command line)."""
        if argv is None:
            command = shlex.join([sys.executable, *sys.argv])
        else:
            command = shlex.join(["python", "-m", "llava.train.train", *argv])
        return cls(command, base_llm, vision_tower)


def describe_model(config: PreTrainedConfig) -> str:
    """One sentence on which model and variant a config builds."""
    layers = config.mm_vision_select_layer
    if hasattr(config, "fusion_variant"):
        return (
            f"Inverse-LLaVA (`fusion_llama`, {_PAPER}): the `{config.fusion_variant}` fusion layer on "
            f"{'/'.join(config.fusion_targets)} of LLM layer(s) {config.fusion_layer_ids}, vision tower "
            f"layer(s) {layers} (d_v = {config.mm_hidden_size}), no projector"
        )
    return (
        f"the LLaVA-1.5 baseline (`llava_llama`): a `{config.mm_projector_type}` projector from vision "
        f"tower layer(s) {layers} (d_v = {config.mm_hidden_size}) into the LLM's embeddings"
    )


def render_model_card(config: PreTrainedConfig, kind: str, card: TrainingCard, files: Sequence[str]) -> str:
    """The card's text. `kind`: `lora` (needs its base to load), `projector` (LLaVA stage 1,
    needs its base) or `full` (stand-alone)."""
    needs_base = kind in ("lora", "projector")
    header = [
        "---",
        f"base_model: {card.base_llm}",
        f"library_name: {'peft' if kind == 'lora' else 'transformers'}",
        "pipeline_tag: image-text-to-text",
        "tags: [llava, inverse-llava, vision-language]",
        "---",
    ]
    what = {
        "lora": "A LoRA run: the adapter plus the fully trained non-LoRA parameters",
        "projector": "A stage-1 run: the projector alone",
        "full": "A complete model",
    }[kind]
    load_args = f'"PATH", "{card.base_llm}"' if needs_base else '"PATH"'
    body = [
        f"# {config.model_type} checkpoint",
        "",
        f"{what} of {describe_model(config)}.",
        "",
        "## Base models",
        "",
        f"- LLM: `{card.base_llm}`",
        f"- vision tower: `{card.vision_tower}` (frozen)",
        "",
        "## Training command",
        "",
        "```bash",
        card.command,
        "```",
        "",
        "## Loading",
        "",
        "```python",
        "from llava.model.builder import load_pretrained_model",
        f"tokenizer, model, image_processor, context_len = load_pretrained_model({load_args})",
        "```",
        "",
        "## Files",
        "",
        *[f"- `{name}`" for name in sorted(files)],
        "",
    ]
    return "\n".join(header + [""] + body)


def write_model_card(
    folder: str | os.PathLike, config: PreTrainedConfig, kind: str, card: TrainingCard
) -> None:
    """Write the card into `folder` (written last: it lists the folder's other files)."""
    folder = Path(folder)
    files = [p.name for p in folder.iterdir() if p.name != MODEL_CARD]
    (folder / MODEL_CARD).write_text(render_model_card(config, kind, card, files), encoding="utf-8")
