"""The playground's chat LM: a tiny Llama pre-trained in the phases of `DEFAULT_LM_PHASES` on
`vicuna_v1` conversations about scenes described in words (how the phases were found:
docs/playground_history.md). Its ceiling is measured on held-out text scenes."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
)

from llava.constants import IGNORE_INDEX
from llava.conversation import Conversation
from llava.eval.eval_mme import MMERecord, score_subtask
from llava.inference import DecodingSettings, LoadedModel
from llava.mm_utils import tokenize_conversation
from llava.playground import tasks
from llava.playground.clip import warmup_steps
from llava.playground.datasets import rng_for
from llava.playground.scenes import SCENE_WORDS, sample_scene
from llava.playground.tokenizer import scene_word_ids, text_conversation

if TYPE_CHECKING:
    from llava.playground.backbones import BackbonePreset


@dataclasses.dataclass(frozen=True)
class LMPhase:
    """One phase of the chat LM's pre-training: which questions its conversations ask, and how.
    `scenes="distinct"` draws only scenes whose shapes differ in colour and in shape (one word of
    an object's name finds it); `replay` is the share of conversations asking every category
    instead of `categories`; a yes/no answer token weighs `yes_no_weight` in the answer CE."""

    steps: int
    lr: float
    categories: tuple[str, ...] = tasks.CATEGORIES
    min_turns: int = 6  # questions per conversation: uniform in [min_turns, max_turns]
    max_turns: int = 8
    yes_no_ratio: float = 0.5  # share of yes/no questions (the rest are short-answer ones)
    yes_no_weight: float = 1.0
    schedule: str = "cosine"  # "cosine": warm-up then decay to 0; "constant": warm-up then flat
    scenes: str = "any"
    replay: float = 0.0

    def __post_init__(self) -> None:
        unknown = [c for c in self.categories if c not in tasks.CATEGORIES]
        if unknown or not self.categories:
            raise ValueError(
                f"LMPhase.categories: unknown or empty {unknown}; expected some of {tasks.CATEGORIES}"
            )
        if self.scenes not in ("any", "distinct") or self.schedule not in ("cosine", "constant"):
            raise ValueError(
                f"LMPhase: scenes must be 'any' or 'distinct', schedule 'cosine' or 'constant', got {self}"
            )
        counts_ok = self.steps >= 0 and 1 <= self.min_turns <= self.max_turns
        if not (counts_ok and 0 <= self.yes_no_ratio <= 1 and 0 <= self.replay <= 1):
            raise ValueError(
                "LMPhase needs steps >= 0, 1 <= min_turns <= max_turns, yes_no_ratio and replay in [0, 1], "
                f"got {self}"
            )


def short_phase(steps: int, *categories: str, scenes: str = "any") -> LMPhase:
    """A look-up phase: short-answer questions only (1-3 per conversation), lr 1e-3 constant."""
    return LMPhase(steps, 1e-3, categories or tasks.CATEGORIES, 1, 3, 0.0, schedule="constant", scenes=scenes)


def yes_no_phase(steps: int, *categories: str, schedule: str = "constant") -> LMPhase:
    """A yes/no phase: 1-3 questions, 80% yes/no, the yes/no token weighing 4, lr 1e-3."""
    return LMPhase(steps, 1e-3, categories or tasks.CATEGORIES, 1, 3, 0.8, 4.0, schedule=schedule)


# Look-ups first (on distinct scenes, then on any), then yes/no a few categories at a time with
# learnt ones replayed, count / numerical / spatial relation alone, then everything.
DEFAULT_LM_PHASES = (
    short_phase(600, "color", scenes="distinct"),
    short_phase(700, "color", "position", scenes="distinct"),
    short_phase(800, "color", "position", "spatial_relation", "existence"),
    short_phase(600),
    yes_no_phase(600, "existence", "color", "position", "OCR"),
    yes_no_phase(
        600, "count", "comparison", "spatial_relation", "numerical_calculation", "existence", "color"
    ),
    yes_no_phase(1000, "count", "numerical_calculation", "spatial_relation"),
    yes_no_phase(1600, schedule="cosine"),
)


def build_lm(preset: BackbonePreset, tokenizer) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.lm_hidden,
        intermediate_size=preset.lm_intermediate,
        num_hidden_layers=preset.lm_layers,
        num_attention_heads=preset.lm_heads,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    init_scene_word_embeddings(model, tokenizer)
    return model


@torch.no_grad()
def init_scene_word_embeddings(model: LlamaForCausalLM, tokenizer) -> None:
    """Start each scene word's input embedding as the sum of the embeddings of the words it
    stands for ("topleftredcircle" = "top" + "left" + "red" + "circle"; words the vocabulary
    lacks are left out), so that a question's words match the scene's from the first step."""
    embeddings = model.get_input_embeddings().weight  # [V, D]
    vocab = tokenizer.get_vocab()
    for word, word_id in scene_word_ids(tokenizer).items():
        part_ids = [vocab[p] for p in (f"▁{part}" for part in SCENE_WORDS[word]) if p in vocab]
        embeddings[word_id] = embeddings[part_ids].sum(dim=0)


def lm_batches(
    tokenizer, rng: random.Random, batch_size: int, phase: LMPhase
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless batches of `phase`'s text-scene conversations: `input_ids`, `labels` and
    `attention_mask`, all `[B, T]` (right-padded; labels `IGNORE_INDEX` outside the answers)."""
    while True:
        rows = []
        while len(rows) < batch_size:
            scene = sample_scene(rng)
            if phase.scenes == "distinct" and not scene.distinct:
                continue
            n = rng.randint(phase.min_turns, phase.max_turns)
            categories = (
                tasks.CATEGORIES if phase.replay and rng.random() < phase.replay else phase.categories
            )
            questions = tasks.sample_questions(scene, rng, n, categories, phase.yes_no_ratio)
            if questions:  # none of the phase's categories may be askable about this scene
                rows.append(
                    tokenize_conversation(text_conversation(scene, questions), tokenizer, add_bos=True)
                )
        batch = tokenizer.pad(
            {"input_ids": [ids for ids, _ in rows]}, padding_side="right", return_tensors="pt"
        )
        labels = pad_sequence(
            [torch.tensor(lab) for _, lab in rows], batch_first=True, padding_value=IGNORE_INDEX
        )
        yield batch["input_ids"], labels, batch["attention_mask"]


def yes_no_token_mask(tokenizer) -> torch.Tensor:
    """`[V]` bool: the tokens that spell a whole yes/no answer (with or without the word marker)."""
    return torch.tensor(
        [tokenizer.decode([i]).strip() in (tasks.YES, tasks.NO) for i in range(len(tokenizer))],
        dtype=torch.bool,
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


def phase_scheduler(optimizer: torch.optim.Optimizer, phase: LMPhase, warmup_ratio: float):
    """Transformers' warm-up schedule for one phase (cosine to 0, or constant), based on the
    phase's own rate: each phase restarts the warm-up on the optimizer carried across phases."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = phase.lr  # LambdaLR keeps an existing initial_lr
    warmup = warmup_steps(phase.steps, warmup_ratio)
    if phase.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, phase.steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def train_lm(model: LlamaForCausalLM, tokenizer, preset: BackbonePreset, seed: int) -> None:
    """Chat pre-training, phase after phase of `preset.lm_phases` (one AdamW throughout, each
    phase with its own schedule from `phase_scheduler`); loss from `lm_loss`."""
    rng = rng_for(seed, "backbones/lm-train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0, betas=(0.9, 0.98))
    yes_no_tokens = yes_no_token_mask(tokenizer)
    model.train()
    progress = tqdm(total=sum(phase.steps for phase in preset.lm_phases), desc="chat LM pre-training")
    for index, phase in enumerate(preset.lm_phases):
        scheduler = phase_scheduler(optimizer, phase, preset.warmup_ratio)
        batches = lm_batches(tokenizer, rng, preset.lm_batch, phase)
        for _ in range(phase.steps):
            input_ids, labels, mask = next(batches)
            logits = model(input_ids=input_ids, attention_mask=mask).logits  # [B, T, V]
            weights = (phase.yes_no_weight, preset.lm_all_token_weight)
            loss, answer_loss, all_loss = lm_loss(logits, input_ids, labels, mask, yes_no_tokens, *weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            progress.update()
            progress.set_postfix(
                phase=index + 1, answer=f"{answer_loss.item():.3f}", all=f"{all_loss.item():.3f}"
            )
    progress.close()


@torch.no_grad()
def answer_conversations(
    model: LlamaForCausalLM, tokenizer, conversations: list[Conversation], batch_size: int = 64
) -> list[str]:
    """Greedy answers (up to 8 tokens) to open conversations through `llava.inference`'s engine,
    in batches of `batch_size`."""
    engine = LoadedModel(tokenizer, model.eval(), None, model.config.max_position_embeddings, "chat LM")
    prompts = [engine.prompt_ids(conv) for conv in conversations]
    settings = DecodingSettings(max_new_tokens=8)
    batches = (prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size))
    return [answer for batch in batches for answer in engine.generate(batch, [None] * len(batch), settings)]


def evaluate_lm(model, tokenizer, per_category: int, seed: int) -> dict[str, dict[str, float]]:
    """The LM's ceiling per category on `per_category` held-out text scenes of `seed` (a yes/no
    pair and a short question each); see `score_ceiling`."""
    rng = rng_for(seed, "backbones/lm-eval")
    conversations: list[Conversation] = []
    meta: list[tuple[str, str, int, str]] = []  # (category, question kind, pair index, answer)
    for category in tasks.CATEGORIES:
        for i in range(per_category):
            scene = tasks.askable_scene(rng, category)
            for question in (
                *tasks.yes_no_pair(scene, category, rng),
                tasks.short_question(scene, category, rng),
            ):
                conversations.append(text_conversation(scene, [question], open_last=True))
                meta.append((category, question.kind, i, question.answer))
    return score_ceiling(meta, answer_conversations(model, tokenizer, conversations))


def score_ceiling(
    meta: list[tuple[str, str, int, str]], predictions: list[str]
) -> dict[str, dict[str, float]]:
    """Per category of `meta`: `yes_no_acc` and `yes_no_acc_plus` (`llava.eval.eval_mme`'s
    scoring, a pair being one image), `short_answer_acc` (exact match, case-blind) and
    `short_answer_top_share` (the most common short prediction's share: near 1.0, the LM gives
    one answer whatever the scene)."""
    yes_no: dict[str, list[MMERecord]] = defaultdict(list)
    short: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for (category, kind, i, answer), prediction in zip(meta, predictions, strict=True):
        if kind == "yes_no":
            yes_no[category].append(MMERecord(category, str(i), "", answer, prediction))
        else:
            short[category].append((prediction.lower(), answer.lower()))
    results = {}
    for category in dict.fromkeys(c for c, *_ in meta):
        pairs = score_subtask(yes_no[category])
        answers = short[category]
        results[category] = {
            "yes_no_acc": pairs.acc,
            "yes_no_acc_plus": pairs.acc_plus,
            "short_answer_acc": sum(p == a for p, a in answers) / len(answers),
            "short_answer_top_share": Counter(p for p, _ in answers).most_common(1)[0][1] / len(answers),
        }
    return results
