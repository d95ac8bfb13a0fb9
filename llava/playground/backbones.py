"""Stage 0 of the playground: pre-train the tiny backbones (what CLIP and Vicuna are at 7B).

- **Vision tower**: a tiny CLIP (`CLIPModel`, ViT with patch 24 on 48x48 images: one patch per
  grid cell, 4 image positions),
  trained contrastively on image/caption pairs drawn from its own random stream. Its vision half
  is saved as a `CLIPVisionModel` with a matching `CLIPImageProcessor` in `<dir>/vision`.
- **Chat LM**: a tiny `LlamaForCausalLM` with a BPE tokenizer trained on the corpus, pre-trained
  on text-only vicuna_v1 conversations about scenes *described in words* (`Scene.describe()` in
  place of the image), tokenised by `llava.mm_utils.tokenize_conversation` exactly as the VLM
  training will tokenise them, in the phases of `DEFAULT_LM_PHASES` (look-ups, then yes/no
  questions). It knows the language and the template, and has never seen an image. Saved with
  its tokenizer in `<dir>/llm`.

Both are measured on held-out data (CLIP: retrieval top-1 among `retrieval_pool` pairs; LM:
per-category accuracy when the scene is given as text, i.e. the ceiling a VLM built on it can
hope for) and the numbers are written to `<dir>/metrics.json`.

Rebuild the shipped backbones (see playground/backbones/README.md)::

    python -m llava.playground.backbones --output-dir playground/backbones --seed 0 --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from llava.constants import IGNORE_INDEX
from llava.conversation import get_conv_template
from llava.mm_utils import tokenize_conversation
from llava.playground.datasets import rng_for
from llava.playground.scenes import (
    IMAGE_SIZE,
    SCENE_WORDS,
    Scene,
    rearranged,
    render_scene,
    sample_scene,
)
from llava.playground.tasks import (
    CATEGORIES,
    NO,
    YES,
    Question,
    can_ask,
    sample_questions,
    short_question,
    yes_no_pair,
)
from llava.tools.tokenizer import train_tokenizer

logger = logging.getLogger(__name__)

# Where the repository ships the pre-built backbones (relative to the repository root).
REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_BACKBONES = REPO_ROOT / "playground" / "backbones"
VISION_SUBDIR = "vision"
LLM_SUBDIR = "llm"
CONV_TEMPLATE = "vicuna_v1"
_INTERIM_EVAL_PER_CATEGORY = 20  # held-out scenes per category for `--eval-every` logs
REARRANGED_CHOICES = 4  # CLIP's position check: an image's caption vs 3 rearranged scenes' captions


def vision_tower_path(backbones_dir: str | os.PathLike = SHIPPED_BACKBONES) -> Path:
    """The vision tower folder (`CLIPVisionModel` + `CLIPImageProcessor`)."""
    return Path(backbones_dir) / VISION_SUBDIR


def llm_path(backbones_dir: str | os.PathLike = SHIPPED_BACKBONES) -> Path:
    """The chat LM folder (`LlamaForCausalLM` + fast tokenizer)."""
    return Path(backbones_dir) / LLM_SUBDIR


@dataclasses.dataclass(frozen=True)
class LMPhase:
    """One phase of the chat LM's pre-training: what its conversations ask and how it learns.

    Look-ups ("Where is the blue circle?") are learnt first, on short-answer questions, a few
    categories at a time and, at first, on `"distinct"` scenes only (no two shapes share a colour
    or a shape, so one word of a name finds the object). Balanced yes/no questions carry no
    first-order signal (the question alone and the scene alone each predict "Yes" half the
    time), so they come once the look-ups they check exist, with the yes/no answer token
    up-weighted.
    """

    steps: int
    lr: float
    categories: tuple[str, ...] = CATEGORIES
    min_turns: int = 6  # questions per conversation: uniform in [min_turns, max_turns]
    max_turns: int = 8
    yes_no_ratio: float = 0.5  # share of yes/no questions (the rest are short-answer ones)
    yes_no_weight: float = 1.0  # weight of a yes/no answer token in the answer CE
    schedule: str = "cosine"  # "cosine": warmup then decay to 0; "constant": warmup then flat
    scenes: str = "any"  # "distinct": only scenes whose shapes differ in colour and in shape
    replay: float = 0.0  # share of conversations asking every category instead of `categories`

    def __post_init__(self) -> None:
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown or not self.categories:
            raise ValueError(f"LMPhase.categories: unknown or empty {unknown}; expected some of {CATEGORIES}")
        if self.scenes not in ("any", "distinct"):
            raise ValueError(f"LMPhase.scenes must be 'any' or 'distinct', got {self.scenes!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"LMPhase.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not 1 <= self.min_turns <= self.max_turns:
            raise ValueError(
                f"LMPhase needs 1 <= min_turns <= max_turns, got {self.min_turns}, {self.max_turns}"
            )
        if self.steps < 0 or not 0.0 <= self.yes_no_ratio <= 1.0 or not 0.0 <= self.replay <= 1.0:
            raise ValueError(f"LMPhase: steps must be >= 0, yes_no_ratio and replay in [0, 1], got {self}")


def _short_phase(steps: int, *categories: str, scenes: str = "any") -> LMPhase:
    """A look-up phase: short-answer questions only (1-3 per conversation), lr 1e-3 constant."""
    return LMPhase(
        steps=steps, lr=1e-3, categories=categories or CATEGORIES, min_turns=1, max_turns=3,
        yes_no_ratio=0.0, schedule="constant", scenes=scenes,
    )  # fmt: skip


def _yes_no_phase(steps: int, *categories: str, schedule: str = "constant") -> LMPhase:
    """A yes/no phase: short conversations (1-3 questions, 80% yes/no, the yes/no token weighing
    4), lr 1e-3."""
    return LMPhase(
        steps=steps, lr=1e-3, categories=categories or CATEGORIES, min_turns=1, max_turns=3,
        yes_no_ratio=0.8, yes_no_weight=4.0, schedule=schedule,
    )  # fmt: skip


# Look-ups first, then yes/no. A look-up ("Where is the blue circle?") is learnt on scenes whose
# shapes all differ in colour and in shape, where one word of the name finds the object, and
# then on any scene, where it takes both words (the conjunction is not learnt from scratch
# within 1,000 steps, but is within a few hundred once the one-word look-up exists). Yes/no
# questions come once the short answers they check exist, a few categories at a time with learnt
# ones replayed (a category left out decays within a few hundred steps), then all together.
# Count, numerical and spatial-relation yes/no stay at chance among six categories, so they get a
# phase of their own, alone (a 40% replay of every category kept count at chance); the last phase
# over everything restores what that phase lets sag.
# docs/playground.md has the measurements behind this schedule.
DEFAULT_LM_PHASES = (
    _short_phase(600, "color", scenes="distinct"),
    _short_phase(700, "color", "position", scenes="distinct"),
    _short_phase(800, "color", "position", "spatial_relation", "existence"),
    _short_phase(600),
    _yes_no_phase(600, "existence", "color", "position", "OCR"),
    _yes_no_phase(
        600, "count", "comparison", "spatial_relation", "numerical_calculation", "existence", "color"
    ),
    _yes_no_phase(1000, "count", "numerical_calculation", "spatial_relation"),
    _yes_no_phase(1600, schedule="cosine"),
)


@dataclasses.dataclass(frozen=True)
class BackbonePreset:
    """Sizes and budgets of stage 0."""

    # tokenizer
    vocab_size: int = 512
    tokenizer_corpus: int = 4000  # conversations + captions the tokenizer is trained on
    # CLIP
    clip_hidden: int = 128
    clip_vision_layers: int = 4
    clip_text_layers: int = 2
    clip_heads: int = 4
    clip_patch: int = 24  # one patch per grid cell (a 48 px image, 2x2 cells of 24 px)
    clip_steps: int = 1500
    clip_batch: int = 128
    clip_lr: float = 2e-3
    # share of a CLIP batch that are other scenes of the batch rearranged (same things, other
    # cells): hard negatives that only the positions tell apart
    clip_rearranged: float = 0.5
    retrieval_pool: int = 512
    # chat LM
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
            dataclasses.replace(_yes_no_phase(2, "OCR"), max_turns=1, yes_no_ratio=1.0),
        ),
        lm_batch=4,
        lm_eval_per_category=2,
    ),
}


def _schedule(total_steps: int, warmup_ratio: float, decay: bool = True) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warmup, then cosine decay to 0 (or flat)."""
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not decay:
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


# ----------------------------------------------------------------------------------- tokenizer


def build_tokenizer(preset: BackbonePreset, seed: int) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on rendered vicuna_v1 conversations (system prompt included),
    every question template of every category, captions, and every scene word (so that each is
    one token, however small the corpus)."""
    rng = rng_for(seed, "backbones/tokenizer")
    corpus: list[str] = [" ".join(SCENE_WORDS)]
    for _ in range(preset.tokenizer_corpus):
        scene = sample_scene(rng)
        corpus.append(_conversation(scene, sample_questions(scene, rng, len(CATEGORIES))).get_prompt())
        corpus.append(scene.caption())
    return train_tokenizer(corpus, vocab_size=preset.vocab_size)


def _conversation(scene: Scene, questions: list[Question], open_last: bool = False):
    """A vicuna_v1 conversation about `scene` given as text; with `open_last` the last answer is
    left open for generation."""
    conv = get_conv_template(CONV_TEMPLATE)
    for i, question in enumerate(questions):
        text = f"{scene.describe()}\n{question.text}" if i == 0 else question.text
        conv.append_message(conv.roles[0], text)
        last = i == len(questions) - 1
        conv.append_message(conv.roles[1], None if (open_last and last) else question.answer)
    return conv


# -------------------------------------------------------------------------------------- CLIP


def build_clip(preset: BackbonePreset, tokenizer: PreTrainedTokenizerFast) -> CLIPModel:
    """A CLIP whose text side reads the chat LM's tokenizer (only its vision half is kept)."""
    hidden = preset.clip_hidden
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 4 * hidden,
            "num_hidden_layers": preset.clip_text_layers,
            "num_attention_heads": preset.clip_heads,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": hidden,
            "intermediate_size": 4 * hidden,
            "num_hidden_layers": preset.clip_vision_layers,
            "num_attention_heads": preset.clip_heads,
            "image_size": IMAGE_SIZE,
            "patch_size": preset.clip_patch,
        },
        projection_dim=hidden,
    )
    return CLIPModel(config)


def pixel_statistics(seed: int, n: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of rendered scenes (the image processor's normalisation)."""
    rng = rng_for(seed, "backbones/pixel-stats")
    pixels = np.stack(
        [np.asarray(render_scene(sample_scene(rng)), dtype=np.float64) / 255.0 for _ in range(n)]
    )
    return pixels.mean(axis=(0, 1, 2)).round(4).tolist(), pixels.std(axis=(0, 1, 2)).round(4).tolist()


def make_image_processor(mean: list[float], std: list[float]) -> CLIPImageProcessor:
    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=mean,
        image_std=std,
    )


def _pixels(scenes: list[Scene], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Scenes -> normalised pixels `[N, 3, H, W]` (what the image processor produces)."""
    images = np.stack([np.asarray(render_scene(s)) for s in scenes])  # [N, H, W, 3] uint8
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0  # [N, 3, H, W]
    return (x - mean[None, :, None, None]) / std[None, :, None, None]


def _caption_ids(
    tokenizer: PreTrainedTokenizerFast, scenes: list[Scene]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption token ids `[N, T]` (BOS ... EOS, right-padded) and the index of each EOS `[N]`."""
    rows = [tokenizer(s.caption()).input_ids + [tokenizer.eos_token_id] for s in scenes]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, torch.tensor([len(r) - 1 for r in rows])


def _image_embeddings(clip: CLIPModel, pixels: torch.Tensor) -> torch.Tensor:
    """L2-normalised image embeddings `[N, D]`."""
    return F.normalize(clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output), dim=-1)


def _text_embeddings(clip: CLIPModel, ids: torch.Tensor, eos_index: torch.Tensor) -> torch.Tensor:
    """L2-normalised caption embeddings `[N, D]`, pooled at each caption's EOS (explicitly, since
    CLIP's own pooling treats `eos_token_id == 2` as a legacy argmax)."""
    mask = (torch.arange(ids.shape[1])[None, :] <= eos_index[:, None]).long()  # [N, T]
    hidden = clip.text_model(input_ids=ids, attention_mask=mask).last_hidden_state  # [N, T, H]
    return F.normalize(clip.text_projection(hidden[torch.arange(ids.shape[0]), eos_index]), dim=-1)


def clip_batch_scenes(rng: random.Random, batch: int, rearranged_share: float) -> list[Scene]:
    """`batch` scenes for one contrastive step: fresh ones, then `round(batch x rearranged_share)`
    of them rearranged (the first ones, each once), so positions are needed to tell pairs apart."""
    n_moved = round(batch * rearranged_share)
    scenes = [sample_scene(rng) for _ in range(batch - n_moved)]
    return scenes + [rearranged(scene, rng) for scene in scenes[:n_moved]]


def train_clip(
    clip: CLIPModel, tokenizer: PreTrainedTokenizerFast, preset: BackbonePreset, seed: int, mean, std
) -> dict[str, float]:
    """Contrastive pre-training on freshly drawn pairs; returns held-out retrieval top-1."""
    mean_t, std_t = torch.tensor(mean), torch.tensor(std)
    rng = rng_for(seed, "backbones/clip-train")
    optimizer = torch.optim.AdamW(clip.parameters(), lr=preset.clip_lr, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(preset.clip_steps, preset.warmup_ratio)
    )
    clip.train()
    progress = tqdm(range(preset.clip_steps), desc="CLIP pre-training")
    for _ in progress:
        scenes = clip_batch_scenes(rng, preset.clip_batch, preset.clip_rearranged)
        ids, eos_index = _caption_ids(tokenizer, scenes)
        image = _image_embeddings(clip, _pixels(scenes, mean_t, std_t))
        text = _text_embeddings(clip, ids, eos_index)
        logits = clip.logit_scale.exp() * image @ text.T  # [B, B]
        target = torch.arange(len(scenes))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        progress.set_postfix(loss=f"{loss.item():.3f}")
    return evaluate_clip(clip, tokenizer, preset.retrieval_pool, seed, mean, std)


@torch.no_grad()
def evaluate_clip(clip: CLIPModel, tokenizer, pool: int, seed: int, mean, std) -> dict[str, float]:
    """Retrieval top-1 among `pool` held-out image/caption pairs, both directions, and
    `rearranged_top1`: how often an image's own caption beats the captions of
    `REARRANGED_CHOICES - 1` rearrangements of its scene (chance `1 / REARRANGED_CHOICES`)."""
    clip.eval()
    mean, std = torch.tensor(mean), torch.tensor(std)
    rng = rng_for(seed, "backbones/clip-eval")
    scenes = [sample_scene(rng) for _ in range(pool)]
    ids, eos_index = _caption_ids(tokenizer, scenes)
    image, text = _image_embeddings(clip, _pixels(scenes, mean, std)), _text_embeddings(clip, ids, eos_index)
    sim = image @ text.T  # [P, P]
    target = torch.arange(pool)
    moved_rng = rng_for(seed, "backbones/clip-eval-rearranged")
    others = [rearranged(s, moved_rng) for s in scenes for _ in range(REARRANGED_CHOICES - 1)]
    moved_text = _text_embeddings(clip, *_caption_ids(tokenizer, others))
    own = sim.diagonal()  # [P]
    rivals = (image[:, None] * moved_text.view(pool, REARRANGED_CHOICES - 1, -1)).sum(-1)  # [P, C-1]
    return {
        "image_to_text_top1": (sim.argmax(dim=1) == target).float().mean().item(),
        "text_to_image_top1": (sim.argmax(dim=0) == target).float().mean().item(),
        "rearranged_top1": (own > rivals.max(dim=1).values).float().mean().item(),
        "pool": pool,
    }


def save_vision_tower(clip: CLIPModel, processor: CLIPImageProcessor, output_dir: Path) -> None:
    """The vision half as a standalone `CLIPVisionModel` plus its image processor."""
    vision = CLIPVisionModel(clip.config.vision_config)
    vision.load_state_dict(clip.vision_model.state_dict())
    vision.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)


# ------------------------------------------------------------------------------------ chat LM


def build_lm(preset: BackbonePreset, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.lm_hidden,
        intermediate_size=preset.lm_intermediate,
        num_hidden_layers=preset.lm_layers,
        num_attention_heads=preset.lm_heads,
        num_key_value_heads=preset.lm_heads,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    init_scene_word_embeddings(model, tokenizer)
    return model


@torch.no_grad()
def init_scene_word_embeddings(model: LlamaForCausalLM, tokenizer) -> None:
    """Start each scene word's input embedding as the sum of the embeddings of the words it
    stands for (`SCENE_WORDS`: "topleftredcircle" as "top" + "left" + "red" + "circle"; words
    the vocabulary lacks are left out), so that a question's words match the scene's from the
    first step and the look-ups need no factorisation learnt first."""
    embeddings = model.get_input_embeddings().weight  # [V, D]
    vocab = tokenizer.get_vocab()
    for word, word_id in scene_word_ids(tokenizer).items():
        part_ids = [vocab[p] for p in (f"▁{part}" for part in SCENE_WORDS[word]) if p in vocab]
        embeddings[word_id] = embeddings[part_ids].sum(dim=0)


def scene_word_ids(tokenizer, source: str = "the tokenizer") -> dict[str, int]:
    """The token id of every scene word; a `ValueError` naming `source` and the first word that
    is not one token (a chat LM built for another scene text, say)."""
    ids = {}
    for word in SCENE_WORDS:
        word_ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(word_ids) != 1:
            raise ValueError(f"scene word {word!r} is not one token of {source}: {word_ids}")
        ids[word] = word_ids[0]
    return ids


def _lm_batches(
    tokenizer, rng: random.Random, batch_size: int, phase: LMPhase
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless batches of text-scene conversations (`batch_size` of them, asking `phase`'s
    categories, `min_turns` to `max_turns` questions each, a share `yes_no_ratio` of them yes/no):
    `input_ids`, `labels`, `attention_mask`, all `[B, T]` (right-padded; labels `IGNORE_INDEX`
    outside the answers)."""
    while True:
        rows = []
        while len(rows) < batch_size:
            scene = sample_scene(rng)
            if phase.scenes == "distinct" and not scene.distinct:
                continue
            n = rng.randint(phase.min_turns, phase.max_turns)
            categories = CATEGORIES if phase.replay and rng.random() < phase.replay else phase.categories
            questions = sample_questions(scene, rng, n, categories, phase.yes_no_ratio)
            if not questions:  # none of the phase's categories can be asked about this scene
                continue
            rows.append(tokenize_conversation(_conversation(scene, questions), tokenizer, add_bos=True))
        length = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((batch_size, length), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((batch_size, length), dtype=torch.long)
        for i, (ids, lab) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(lab)] = torch.tensor(lab)
            mask[i, : len(ids)] = 1
        yield input_ids, labels, mask


def yes_no_token_mask(tokenizer) -> torch.Tensor:
    """`[V]` bool: the tokens that spell a whole yes/no answer ("Yes"/"No", with or without the
    word-boundary marker)."""
    return torch.tensor(
        [tokenizer.decode([i]).strip() in (YES, NO) for i in range(len(tokenizer))], dtype=torch.bool
    )


def lm_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    yes_no_tokens: torch.Tensor,
    yes_no_weight: float,
    all_token_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(loss, answer CE, all-token CE)`. The answer CE is a weighted mean over answer tokens,
    a yes/no answer token weighing `yes_no_weight`; `loss = answer CE + all_token_weight x
    next-token CE on every real token`. logits `[B, T, V]`; the rest `[B, T]`."""
    flat = logits[:, :-1].reshape(-1, logits.shape[-1])  # [B*(T-1), V]
    targets = labels[:, 1:].reshape(-1)  # [B*(T-1)]
    answer = targets != IGNORE_INDEX
    weights = answer.float()
    weights[answer & yes_no_tokens[targets.clamp(min=0)]] = yes_no_weight
    token_ce = F.cross_entropy(flat, targets, ignore_index=IGNORE_INDEX, reduction="none")
    answer_loss = (token_ce * weights).sum() / weights.sum().clamp(min=1.0)
    all_targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE_INDEX).reshape(-1)
    all_loss = F.cross_entropy(flat, all_targets, ignore_index=IGNORE_INDEX)
    return answer_loss + all_token_weight * all_loss, answer_loss, all_loss


def train_lm(
    model: LlamaForCausalLM, tokenizer, preset: BackbonePreset, seed: int, eval_every: int = 0
) -> None:
    """Chat pre-training, phase after phase of `preset.lm_phases` (one AdamW throughout, each
    phase with its own learning-rate schedule); loss from `lm_loss`. With `eval_every` > 0 the
    ceiling on a small held-out set is logged every `eval_every` steps and at each phase's end."""
    rng = rng_for(seed, "backbones/lm-train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0, betas=(0.9, 0.98))
    yes_no_tokens = yes_no_token_mask(tokenizer)
    model.train()
    total = sum(phase.steps for phase in preset.lm_phases)
    progress = tqdm(total=total, desc="chat LM pre-training")
    step = 0
    for index, phase in enumerate(preset.lm_phases):
        factor = _schedule(phase.steps, preset.warmup_ratio, decay=phase.schedule == "cosine")
        batches = _lm_batches(tokenizer, rng, preset.lm_batch, phase)
        for phase_step in range(phase.steps):
            for group in optimizer.param_groups:
                group["lr"] = phase.lr * factor(phase_step)
            input_ids, labels, mask = next(batches)
            logits = model(input_ids=input_ids, attention_mask=mask).logits  # [B, T, V]
            loss, answer_loss, all_loss = lm_loss(
                logits,
                input_ids,
                labels,
                mask,
                yes_no_tokens,
                phase.yes_no_weight,
                preset.lm_all_token_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            progress.update()
            progress.set_postfix(
                phase=index + 1, answer=f"{answer_loss.item():.3f}", all=f"{all_loss.item():.3f}"
            )
            if eval_every and (step % eval_every == 0 or phase_step == phase.steps - 1):
                _log_ceiling(f"step {step}", evaluate_lm(model, tokenizer, _INTERIM_EVAL_PER_CATEGORY, seed))
                model.train()
    progress.close()


def _log_ceiling(when: str, ceiling: dict[str, dict[str, float]]) -> None:
    for category, row in ceiling.items():
        logger.info("LM ceiling (%s) %-22s %s", when, category, {k: round(v, 3) for k, v in row.items()})


@torch.no_grad()
def generate_answers(
    model, tokenizer, prompts: list[str], max_new_tokens: int = 8, batch_size: int = 64
) -> list[str]:
    """Greedy answers to full vicuna_v1 prompts (left-padded batches), decoded and stripped."""
    model.eval()
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rows = [tokenizer(p).input_ids for p in prompts[start : start + batch_size]]
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, length - len(row) :] = torch.tensor(row)
            mask[i, length - len(row) :] = 1
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # [B, T + new]
        answers.extend(t.strip() for t in tokenizer.batch_decode(out[:, length:], skip_special_tokens=True))
    return answers


def text_prompt(scene: Scene, question: Question) -> str:
    """The vicuna_v1 prompt asking `question` about `scene` described in words."""
    return _conversation(scene, [question], open_last=True).get_prompt()


def evaluate_lm(model, tokenizer, per_category: int, seed: int) -> dict[str, dict[str, float]]:
    """The LM's ceiling: per category, on held-out text scenes, yes/no acc and acc+ (MME style,
    both questions of a pair right), short-answer exact match, and the share of the most common
    short answer (near 1.0: the LM gives one answer whatever the scene, i.e. it does not look
    the question's object up)."""
    rng = rng_for(seed, "backbones/lm-eval")
    prompts: list[str] = []
    meta: list[tuple[str, str, int, str]] = []  # (category, kind, pair index, answer)
    for category in CATEGORIES:
        for i in range(per_category):
            scene = sample_scene(rng)
            while not can_ask(scene, category):
                scene = sample_scene(rng)
            for question in (*yes_no_pair(scene, category, rng), short_question(scene, category, rng)):
                prompts.append(text_prompt(scene, question))
                meta.append((category, question.kind, i, question.answer))
    return score_ceiling(meta, generate_answers(model, tokenizer, prompts))


def score_ceiling(
    meta: list[tuple[str, str, int, str]], predictions: list[str]
) -> dict[str, dict[str, float]]:
    """Per category of `meta` (`(category, kind, pair index, answer)` per prediction):
    `yes_no_acc`, `yes_no_acc_plus` (both questions of a pair right), `short_answer_acc` and
    `short_answer_top_share` (the most common short prediction's share)."""
    right: dict[tuple[str, str], list[bool]] = defaultdict(list)
    pairs: dict[str, dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    short: dict[str, Counter] = defaultdict(Counter)
    for (category, kind, i, answer), prediction in zip(meta, predictions, strict=True):
        correct = prediction.lower() == answer.lower()
        right[category, kind].append(correct)
        if kind == "yes_no":
            pairs[category][i].append(correct)
        else:
            short[category][prediction.lower()] += 1
    results = {}
    for category in dict.fromkeys(c for c, *_ in meta):
        acc_plus = [all(pair) for pair in pairs[category].values()]
        results[category] = {
            "yes_no_acc": float(np.mean(right[category, "yes_no"])),
            "yes_no_acc_plus": float(np.mean(acc_plus)),
            "short_answer_acc": float(np.mean(right[category, "short"])),
            "short_answer_top_share": short[category].most_common(1)[0][1] / short[category].total(),
        }
    return results


# ---------------------------------------------------------------------------------- the stage


def _stage_fields(preset: BackbonePreset, prefix: str, tokenizer) -> dict:
    """What a stage depends on, as JSON values (so that they compare equal to the ones read back
    from metrics.json): the preset's tokenizer fields and its own, and the tokenizer's vocabulary
    (its SHA-256), which changes with the scene text and the question templates."""
    fields = {
        k: v
        for k, v in dataclasses.asdict(preset).items()
        if k.startswith((prefix, "vocab_size", "tokenizer_"))
    }
    vocab = json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()
    fields["tokenizer_sha256"] = hashlib.sha256(vocab).hexdigest()
    return json.loads(json.dumps(fields))


def _stage_done(metrics: dict, stage: str, folder: Path, fields: dict, seed: int) -> bool:
    entry = metrics.get(stage)
    return (
        (folder / "model.safetensors").is_file()
        and entry is not None
        and entry.get("seed") == seed
        and entry.get("config") == fields
    )


def _save_atomically(folder: Path, save: Callable[[Path], None]) -> None:
    """Write into `<folder>.partial`, then move it into place (an interrupted save leaves no
    half-written backbone behind)."""
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    save(partial)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)


def build_backbones(
    output_dir: str | os.PathLike,
    seed: int = 0,
    preset: str | BackbonePreset = "default",
    eval_every: int = 0,
) -> dict:
    """Pre-train both backbones, save them under `output_dir/{vision,llm}`, and return (and
    write to `output_dir/metrics.json`) the measured numbers and wall times.

    Resumable by stage: a stage whose backbone and metrics already exist for the same seed and
    settings is skipped; an interrupted stage restarts from scratch. `eval_every` > 0 logs the chat
    LM's ceiling on a small held-out set every that many steps.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown backbone preset {preset!r}; expected one of {sorted(PRESETS)}")
        preset = PRESETS[preset]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = output_dir / "metrics.json"
    metrics: dict = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}

    def record(stage: str, entry: dict) -> None:
        metrics[stage] = entry
        metrics_path.write_text(json.dumps(metrics, indent=1) + "\n")

    tokenizer = build_tokenizer(preset, seed)
    logger.info("tokenizer: %d tokens", len(tokenizer))

    clip_fields = _stage_fields(preset, "clip_", tokenizer)
    if _stage_done(metrics, "clip", vision_tower_path(output_dir), clip_fields, seed):
        logger.info("vision tower: reusing %s", vision_tower_path(output_dir))
    else:
        torch.manual_seed(seed)
        mean, std = pixel_statistics(seed)
        clip = build_clip(preset, tokenizer)
        logger.info("CLIP: %.2fM parameters (vision %.2fM)", _millions(clip), _millions(clip.vision_model))
        start = time.perf_counter()
        result = train_clip(clip, tokenizer, preset, seed, mean, std)
        result["train_seconds"] = round(time.perf_counter() - start, 1)
        result["threads"] = torch.get_num_threads()
        logger.info("CLIP retrieval: %s", result)
        processor = make_image_processor(mean, std)
        _save_atomically(vision_tower_path(output_dir), lambda d: save_vision_tower(clip, processor, d))
        record("clip", {"seed": seed, "config": clip_fields, **result})

    lm_fields = _stage_fields(preset, "lm_", tokenizer)
    if _stage_done(metrics, "lm", llm_path(output_dir), lm_fields, seed):
        logger.info("chat LM: reusing %s", llm_path(output_dir))
    else:
        torch.manual_seed(seed)
        model = build_lm(preset, tokenizer)
        logger.info("chat LM: %.2fM parameters", _millions(model))
        start = time.perf_counter()
        train_lm(model, tokenizer, preset, seed, eval_every=eval_every)
        train_seconds = round(time.perf_counter() - start, 1)
        ceiling = evaluate_lm(model, tokenizer, preset.lm_eval_per_category, seed)
        _log_ceiling("final", ceiling)

        def save_lm(folder: Path) -> None:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

        _save_atomically(llm_path(output_dir), save_lm)
        record(
            "lm",
            {
                "seed": seed,
                "config": lm_fields,
                "train_seconds": train_seconds,
                "threads": torch.get_num_threads(),
                "ceiling": ceiling,
            },
        )
    logger.info("backbones in %s", output_dir)
    return metrics


def load_backbones(backbones_dir: str | os.PathLike = SHIPPED_BACKBONES):
    """`(vision_tower, image_processor, llm, tokenizer)` loaded with the standard HF loaders."""
    vision_dir, llm_dir = vision_tower_path(backbones_dir), llm_path(backbones_dir)
    for path in (vision_dir, llm_dir):
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"no backbone at {path}; build one with `python -m llava.playground.backbones --output-dir {backbones_dir}`"
            )
    return (
        CLIPVisionModel.from_pretrained(vision_dir),
        CLIPImageProcessor.from_pretrained(vision_dir),
        AutoModelForCausalLM.from_pretrained(llm_dir),
        AutoTokenizer.from_pretrained(llm_dir),
    )


def _millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _parse_field(owner, name: str, value: str, where: str):
    fields = {f.name: f.type for f in dataclasses.fields(owner)}
    if name not in fields:
        raise ValueError(f"--override {where!r}: unknown field {name!r}; fields: {sorted(fields)}")
    kind = fields[name]
    parse = {"int": int, "float": float, "str": str}.get(kind)
    if kind.startswith("tuple[str"):
        return tuple(value.split(","))
    if parse is not None:
        try:
            return parse(value)
        except ValueError:
            raise ValueError(f"--override {where!r}: {name!r} expects {kind}, got {value!r}") from None
    raise ValueError(f"--override {where!r}: field {name!r} ({kind}) is set per phase: lm_phases.N.FIELD")


def apply_override(preset: BackbonePreset, item: str) -> BackbonePreset:
    """`preset` with one `FIELD=VALUE` (or `lm_phases.N.FIELD=VALUE`) changed; a bad name, index
    or value raises a `ValueError` naming it."""
    name, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"--override {item!r}: expected FIELD=VALUE")
    path = name.split(".")
    if path[0] != "lm_phases":
        return dataclasses.replace(preset, **{name: _parse_field(preset, name, value, item)})
    if len(path) != 3 or not path[1].isdigit() or int(path[1]) >= len(preset.lm_phases):
        raise ValueError(f"--override {item!r}: expected lm_phases.N.FIELD with N < {len(preset.lm_phases)}")
    phases = list(preset.lm_phases)
    index = int(path[1])
    phases[index] = dataclasses.replace(
        phases[index], **{path[2]: _parse_field(phases[index], path[2], value, item)}
    )
    return dataclasses.replace(preset, lm_phases=tuple(phases))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, help="where to write vision/, llm/ and metrics.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="log the chat LM's ceiling every N training steps (0: only at the end)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override one field of the preset (repeatable), e.g. clip_steps=1500, or of one LM phase: "
        "lm_phases.3.steps=2000, lm_phases.1.categories=OCR,count",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    try:
        for item in args.override:
            preset = apply_override(preset, item)
    except ValueError as error:
        parser.error(str(error))
    return build_backbones(args.output_dir, seed=args.seed, preset=preset, eval_every=args.eval_every)


if __name__ == "__main__":
    main()
