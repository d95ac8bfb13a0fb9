"""Stage 0 of the playground, the tiny backbones (what CLIP and Vicuna are at 7B): the tokenizer
(`tokenizer.py`), the vision tower (`clip.py`, in `<dir>/vision`) and the chat LM (`chat_lm.py`, in
`<dir>/llm`), each a stage keyed on the preset's fields, the seed and the tokenizer's vocabulary.
`python -m llava.playground backbones` runs it (playground/backbones/README.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from transformers import AutoTokenizer

from llava.playground import chat_lm, clip
from llava.playground.chat_lm import DEFAULT_LM_PHASES, LMPhase, yes_no_phase
from llava.playground.datasets import rng_for
from llava.playground.stages import as_json, run_stage
from llava.playground.tokenizer import build_tokenizer, scene_word_ids

logger = logging.getLogger(__name__)

SHIPPED_BACKBONES = Path(__file__).resolve().parents[2] / "playground" / "backbones"


@dataclasses.dataclass(frozen=True)
class BackbonePreset:
    """Sizes and budgets of stage 0. Fields prefixed `clip_` / `lm_` key their stage."""

    vocab_size: int = 512
    tokenizer_corpus: int = 4000  # conversations + captions the tokenizer is trained on
    clip_hidden: int = 128
    clip_vision_layers: int = 4
    clip_text_layers: int = 2
    clip_heads: int = 4
    clip_patch: int = 24  # one patch per grid cell (a 48 px image, 2x2 cells of 24 px)
    clip_steps: int = 1500
    clip_batch: int = 128
    clip_lr: float = 2e-3
    clip_rearranged: float = 0.5  # share of a batch that are its other scenes rearranged
    retrieval_pool: int = 512
    lm_hidden: int = 128
    lm_layers: int = 4
    lm_heads: int = 4
    lm_intermediate: int = 512
    lm_phases: tuple[LMPhase, ...] = DEFAULT_LM_PHASES
    lm_batch: int = 32
    lm_all_token_weight: float = 0.25  # loss = answer CE + w * next-token CE on every token
    lm_eval_per_category: int = 100  # held-out scenes per category (a yes/no pair + a short question each)
    warmup_ratio: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.clip_rearranged <= 0.5:
            raise ValueError(
                f"BackbonePreset.clip_rearranged must be in [0, 0.5], got {self.clip_rearranged}"
            )


PRESETS: dict[str, BackbonePreset] = {
    "default": BackbonePreset(),
    "smoke": BackbonePreset(
        tokenizer_corpus=200,
        clip_hidden=32,
        clip_vision_layers=1,
        clip_text_layers=1,
        clip_heads=2,
        clip_steps=3,
        clip_batch=16,
        retrieval_pool=16,
        lm_hidden=32,
        lm_layers=1,
        lm_heads=2,
        lm_intermediate=64,
        lm_phases=(
            LMPhase(steps=2, lr=3e-3, min_turns=1, max_turns=2),
            dataclasses.replace(yes_no_phase(2, "OCR"), max_turns=1, yes_no_ratio=1.0),
        ),
        lm_batch=4,
        lm_eval_per_category=2,
    ),
}


def stage_settings(preset: BackbonePreset, prefix: str, tokenizer, seed: int) -> dict:
    """What a backbone stage depends on, as JSON: the seed, `preset`'s tokenizer, warm-up and stage
    (`prefix`; CLIP's retrieval pool too) fields, and the SHA-256 of the tokenizer's vocabulary."""
    own = (prefix, "retrieval_pool") if prefix == "clip_" else (prefix,)
    fields = {
        k: v
        for k, v in dataclasses.asdict(preset).items()
        if k.startswith((*own, "vocab_size", "tokenizer_", "warmup_ratio"))
    }
    vocab = json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()
    return as_json({"seed": seed, **fields, "tokenizer_sha256": hashlib.sha256(vocab).hexdigest()})


def preset_tokenizer(preset: BackbonePreset, seed: int):
    """The tokenizer of `preset` and `seed` (every backbone stage reads it)."""
    return build_tokenizer(preset.vocab_size, preset.tokenizer_corpus, rng_for(seed, "backbones/tokenizer"))


def _millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def build_backbones(
    output_dir: str | os.PathLike,
    seed: int = 0,
    preset: str | BackbonePreset = "default",
) -> dict:
    """Pre-train both backbones into `output_dir/{vision,llm}` and return their stage records
    (also written to `output_dir/metrics.json`). A stage finished with the same settings is
    skipped, one finished with other settings refused, an interrupted one run again from
    scratch."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown backbone preset {preset!r}; expected one of {sorted(PRESETS)}")
        preset = PRESETS[preset]
    output_dir = Path(output_dir)
    tokenizer = preset_tokenizer(preset, seed)
    logger.info("tokenizer: %d tokens", len(tokenizer))

    def vision_tower(directory: Path) -> dict:
        torch.manual_seed(seed)
        mean, std = clip.pixel_statistics(seed)
        model = clip.build_clip(preset, tokenizer)
        logger.info("CLIP: %.2fM parameters (vision %.2fM)", _millions(model), _millions(model.vision_model))
        clip.train_clip(model, tokenizer, preset, seed, mean, std)
        result = clip.evaluate_clip(model, tokenizer, preset.retrieval_pool, seed, mean, std)
        logger.info("CLIP retrieval: %s", result)
        clip.save_vision_tower(model, mean, std, directory)
        return {**result, "threads": torch.get_num_threads()}

    def chat_model(directory: Path) -> dict:
        torch.manual_seed(seed)
        model = chat_lm.build_lm(preset, tokenizer)
        logger.info("chat LM: %.2fM parameters", _millions(model))
        chat_lm.train_lm(model, tokenizer, preset, seed)
        ceiling = chat_lm.evaluate_lm(model, tokenizer, preset.lm_eval_per_category, seed)
        for category, row in ceiling.items():
            logger.info("LM ceiling %-22s %s", category, {k: round(v, 3) for k, v in row.items()})
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return {"ceiling": ceiling, "threads": torch.get_num_threads()}

    clip_settings, lm_settings = (
        stage_settings(preset, prefix, tokenizer, seed) for prefix in ("clip_", "lm_")
    )
    metrics = {
        "clip": run_stage(output_dir / "vision", "vision tower", vision_tower, clip_settings),
        "lm": run_stage(output_dir / "llm", "chat LM", chat_model, lm_settings),
    }
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    logger.info("backbones in %s", output_dir)
    return metrics


def check_backbones(backbones_dir: str | os.PathLike = SHIPPED_BACKBONES) -> tuple[Path, Path]:
    """The `(llm, vision)` folders of `backbones_dir`, checked: a `FileNotFoundError` when one holds
    no `config.json`, a `ValueError` when a scene word is not one token of the LM's tokenizer."""
    llm, vision = Path(backbones_dir) / "llm", Path(backbones_dir) / "vision"
    rebuild = f"rebuild with `python -m llava.playground backbones --output-dir {backbones_dir}`"
    for path in (llm, vision):
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no backbone at {path} ({rebuild})")
    scene_word_ids(AutoTokenizer.from_pretrained(llm), f"the chat LM's tokenizer in {llm} ({rebuild})")
    return llm, vision
