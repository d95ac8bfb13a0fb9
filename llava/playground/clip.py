"""The playground's vision tower: a tiny CLIP trained contrastively on scene/caption pairs (its
text side reads the chat LM's tokenizer), kept as a `CLIPVisionModel` and a `CLIPImageProcessor`.
Half of each batch can be the other half's scenes rearranged: hard negatives that only positions
tell apart, so each patch's features say which cell it is.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionModel,
    get_cosine_schedule_with_warmup,
)

from llava.playground.datasets import rng_for
from llava.playground.scenes import IMAGE_SIZE, Scene, rearranged, render_scene, sample_scene

if TYPE_CHECKING:
    from llava.playground.backbones import BackbonePreset

REARRANGED_CHOICES = 4  # the position check: an image's caption vs 3 rearranged scenes' captions


def warmup_steps(steps: int, warmup_ratio: float) -> int:
    """Warm-up length as `TrainingArguments.get_warmup_steps` rounds it (at least one step)."""
    return max(1, math.ceil(steps * warmup_ratio))


def build_clip(preset: BackbonePreset, tokenizer) -> CLIPModel:
    """A CLIP whose text side reads `tokenizer` (only its vision half is kept)."""
    hidden = preset.clip_hidden
    shared = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=preset.clip_heads)
    text = dict(
        shared,
        vocab_size=len(tokenizer),
        num_hidden_layers=preset.clip_text_layers,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        shared,
        num_hidden_layers=preset.clip_vision_layers,
        image_size=IMAGE_SIZE,
        patch_size=preset.clip_patch,
    )
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=hidden))


def pixel_statistics(seed: int, n: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of `n` rendered scenes (the image processor's normalisation)."""
    rng = rng_for(seed, "backbones/pixel-stats")
    pixels = np.stack(
        [np.asarray(render_scene(sample_scene(rng)), dtype=np.float64) / 255.0 for _ in range(n)]
    )  # [n, H, W, 3]
    return pixels.mean(axis=(0, 1, 2)).round(4).tolist(), pixels.std(axis=(0, 1, 2)).round(4).tolist()


def _image_embeddings(
    clip: CLIPModel, scenes: list[Scene], mean: list[float], std: list[float]
) -> torch.Tensor:
    """L2-normalised embeddings `[N, D]` of the scenes' images, normalised as the image processor does."""
    images = np.stack([np.asarray(render_scene(s)) for s in scenes])  # [N, H, W, 3] uint8
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0  # [N, 3, H, W]
    pixels = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return F.normalize(clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output), dim=-1)


def _text_embeddings(clip: CLIPModel, tokenizer, scenes: list[Scene]) -> torch.Tensor:
    """L2-normalised embeddings `[N, D]` of the scenes' captions (BOS ... EOS, right-padded), pooled
    at each caption's EOS (explicitly, since CLIP's own pooling treats `eos_token_id == 2` as a
    legacy argmax)."""
    rows = [tokenizer(s.caption()).input_ids + [tokenizer.eos_token_id] for s in scenes]
    batch = tokenizer.pad({"input_ids": rows}, padding_side="right", return_tensors="pt")  # [N, T] each
    hidden = clip.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    eos = batch["attention_mask"].sum(dim=1) - 1  # [N]
    return F.normalize(clip.text_projection(hidden.last_hidden_state[torch.arange(len(rows)), eos]), dim=-1)


def clip_batch_scenes(rng: random.Random, batch: int, rearranged_share: float) -> list[Scene]:
    """`batch` scenes for one contrastive step: fresh ones, then `round(batch x rearranged_share)`
    of them rearranged (the first ones, each once), so positions are needed to tell pairs apart."""
    n_moved = round(batch * rearranged_share)
    scenes = [sample_scene(rng) for _ in range(batch - n_moved)]
    return scenes + [rearranged(scene, rng) for scene in scenes[:n_moved]]


def train_clip(clip: CLIPModel, tokenizer, preset: BackbonePreset, seed: int, mean, std) -> None:
    """Contrastive pre-training on pairs freshly drawn for `seed`: AdamW, linear warm-up then
    cosine decay to 0 (transformers' `get_cosine_schedule_with_warmup`), logit scale kept <= 100."""
    rng = rng_for(seed, "backbones/clip-train")
    optimizer = torch.optim.AdamW(clip.parameters(), lr=preset.clip_lr, weight_decay=0.1)
    warmup = warmup_steps(preset.clip_steps, preset.warmup_ratio)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, preset.clip_steps)
    clip.train()
    progress = tqdm(range(preset.clip_steps), desc="CLIP pre-training")
    for _ in progress:
        scenes = clip_batch_scenes(rng, preset.clip_batch, preset.clip_rearranged)
        image = _image_embeddings(clip, scenes, mean, std)  # [B, D]
        text = _text_embeddings(clip, tokenizer, scenes)  # [B, D]
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


@torch.no_grad()
def evaluate_clip(clip: CLIPModel, tokenizer, pool: int, seed: int, mean, std) -> dict[str, float]:
    """Retrieval top-1 among `pool` held-out pairs of `seed`, both directions, and
    `rearranged_top1`: how often an image's own caption beats the captions of
    `REARRANGED_CHOICES - 1` rearrangements of its scene (chance `1 / REARRANGED_CHOICES`)."""
    clip.eval()
    rng, moved_rng = rng_for(seed, "backbones/clip-eval"), rng_for(seed, "backbones/clip-eval-rearranged")
    scenes = [sample_scene(rng) for _ in range(pool)]
    image = _image_embeddings(clip, scenes, mean, std)  # [P, D]
    text = _text_embeddings(clip, tokenizer, scenes)  # [P, D]
    sim = image @ text.T  # [P, P]
    target = torch.arange(pool)
    others = [rearranged(s, moved_rng) for s in scenes for _ in range(REARRANGED_CHOICES - 1)]
    moved_text = _text_embeddings(clip, tokenizer, others)  # [P * (C-1), D]
    rivals = (image[:, None] * moved_text.view(pool, REARRANGED_CHOICES - 1, -1)).sum(-1)  # [P, C-1]
    return {
        "image_to_text_top1": (sim.argmax(dim=1) == target).float().mean().item(),
        "text_to_image_top1": (sim.argmax(dim=0) == target).float().mean().item(),
        "rearranged_top1": (sim.diagonal() > rivals.max(dim=1).values).float().mean().item(),
        "pool": pool,
    }


def save_vision_tower(clip: CLIPModel, mean: list[float], std: list[float], output_dir: Path) -> None:
    """The vision half as a standalone `CLIPVisionModel`, with a `CLIPImageProcessor` normalising
    by `mean` and `std`."""
    vision = CLIPVisionModel(clip.config.vision_config)
    vision.load_state_dict(clip.vision_model.state_dict())
    vision.save_pretrained(output_dir)
    crop, size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, {"shortest_edge": IMAGE_SIZE}
    CLIPImageProcessor(size=size, crop_size=crop, image_mean=mean, image_std=std).save_pretrained(output_dir)
