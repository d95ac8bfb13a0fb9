"""The chat LM's tokenizer (BPE, every scene word one token) and its text conversations: a scene
described in words (`Scene.describe()`) where the VLM sees the image, in LLaVA's `vicuna_v1`."""

from __future__ import annotations

import random

from transformers import PreTrainedTokenizerFast

from llava.conversation import Conversation
from llava.data.records import build_conversation
from llava.playground.datasets import scene_conversation
from llava.playground.scenes import SCENE_WORDS, Scene, sample_scene
from llava.playground.tasks import CATEGORIES, Question, sample_questions
from llava.tools.tokenizer import train_tokenizer

CONV_TEMPLATE = "vicuna_v1"


def text_conversation(scene: Scene, questions: list[Question], open_last: bool = False) -> Conversation:
    """The `vicuna_v1` conversation of `scene_conversation(scene, questions)` as training builds it
    (the scene described in words); with `open_last` the last answer is left open for generation."""
    turns = scene_conversation(scene, questions, with_image=False)
    conv = build_conversation({"conversations": turns[:-1] if open_last else turns}, CONV_TEMPLATE)
    if open_last:
        conv.append_message(conv.roles[1], None)
    return conv


def build_tokenizer(vocab_size: int, corpus_size: int, rng: random.Random) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on `corpus_size` rendered conversations (system prompt included,
    every category asked) and captions of scenes drawn from `rng`, plus every scene word, so
    that each scene word is one token however small the corpus."""
    corpus: list[str] = [" ".join(SCENE_WORDS)]
    for _ in range(corpus_size):
        scene = sample_scene(rng)
        corpus.append(text_conversation(scene, sample_questions(scene, rng, len(CATEGORIES))).get_prompt())
        corpus.append(scene.caption())
    return train_tokenizer(corpus, vocab_size=vocab_size)


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
