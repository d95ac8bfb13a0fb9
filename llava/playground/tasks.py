"""Questions about scenes, by category, mirroring MME's perception/cognition split: a yes/no
pair (MME style: one "Yes" and one "No" question on one image, hard negatives of each other) or a
short answer (VQA style: one word or phrase), with LLaVA's prompt suffixes. `can_ask` says which
categories a scene allows (a comparison needs two groups of different sizes).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Mapping

from llava.playground.scenes import CELLS, COLORS, DIGITS, GRID, SHAPES, Scene, SceneObject, sample_scene

PERCEPTION_CATEGORIES = ("existence", "count", "color", "position", "OCR")
COGNITION_CATEGORIES = ("numerical_calculation", "comparison", "spatial_relation")
CATEGORIES = PERCEPTION_CATEGORIES + COGNITION_CATEGORIES

YES_NO_SUFFIX = " Please answer yes or no."
SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
YES, NO = "Yes", "No"

_MAX_ADDEND = 5
_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
_PHRASES = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
Group = tuple[str | None, str | None]  # (colour, shape); None matches any


def short_answer_chance(digits: tuple[int, ...] = DIGITS) -> dict[str, float]:
    """Accuracy of guessing uniformly among the answers a short question of each category allows,
    in a world whose scenes hold one of `digits`."""
    binary = {c: 1 / 2 for c in ("existence", "comparison", "spatial_relation")}
    digit = {c: 1 / len(digits) for c in ("OCR", "numerical_calculation")}  # one sum per digit and k
    return {**binary, "count": 1 / 4, "color": 1 / len(COLORS), "position": 1 / len(CELLS), **digit}


@dataclasses.dataclass(frozen=True)
class Question:
    """One question about a scene. `text` is the full prompt (suffix included), `question` the
    bare question and `answer` the ground truth (`"Yes"`/`"No"` for yes/no questions)."""

    category: str
    question: str
    answer: str
    kind: str  # "yes_no" or "short"

    @property
    def text(self) -> str:
        return self.question + (YES_NO_SUFFIX if self.kind == "yes_no" else SHORT_ANSWER_SUFFIX)


def _group_phrase(color: str | None, shape: str | None) -> str:
    """`"red shapes"`, `"circles"`, or `"shapes"`."""
    if shape is not None:
        return f"{shape}s"
    return f"{color} shapes" if color is not None else "shapes"


def _comparable_groups(scene: Scene) -> list[tuple[Group, Group]]:
    """Pairs of groups (two colours or two shapes) with different sizes, larger group first."""
    pairs = []
    for groups in ([(c, None) for c in COLORS], [(None, s) for s in SHAPES]):
        for a, b in itertools.combinations(groups, 2):
            count_a, count_b = scene.count(*a), scene.count(*b)
            if count_a != count_b:
                pairs.append((a, b) if count_a > count_b else (b, a))
    return pairs


def _relation(a: SceneObject, b: SceneObject, rng: random.Random) -> str:
    """A true direction of `a` relative to `b` ("left", "right", "above", "below")."""
    (a_row, a_column), (b_row, b_column) = divmod(a.cell, GRID), divmod(b.cell, GRID)
    options = []
    if a_column != b_column:
        options.append("left" if a_column < b_column else "right")
    if a_row != b_row:
        options.append("above" if a_row < b_row else "below")
    return rng.choice(options)


def _color_reference(scene: Scene, obj: SceneObject) -> str:
    """How a colour question names `obj`: by its shape when that shape is unique, else by cell."""
    return f"the {obj.shape}" if scene.count(shape=obj.shape) == 1 else f"the shape at the {CELLS[obj.cell]}"


def _count_group(rng: random.Random) -> Group:
    kind = rng.choice(("color", "shape", "all"))
    if kind == "color":
        return rng.choice(tuple(COLORS)), None
    return (None, rng.choice(SHAPES)) if kind == "shape" else (None, None)


def can_ask(scene: Scene, category: str) -> bool:
    """Whether `category` has a question with a well-defined answer about `scene`."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    if category == "comparison":
        return bool(_comparable_groups(scene))
    return len(scene.objects) >= 2 if category == "spatial_relation" else True


def _pair_questions(
    scene: Scene, category: str, rng: random.Random, digits: tuple[int, ...]
) -> tuple[str, str]:
    """The (yes, no) question texts of a pair; every draw from `rng` in the order data relies on."""
    if category == "existence":
        present = rng.choice(scene.objects)
        absent = [(c, s) for c in COLORS for s in SHAPES if scene.count(c, s) == 0]
        hard = [(c, s) for c, s in absent if scene.count(color=c) or scene.count(shape=s)]  # share a word
        color, shape = rng.choice(hard or absent)
        return f"Is there a {present.name} in the image?", f"Is there a {color} {shape} in the image?"
    if category == "count":
        group = _count_group(rng)
        n = scene.count(*group)
        wrong = rng.choice([m for m in (n - 1, n + 1) if 0 <= m <= len(CELLS) - 1])
        stem = f"Is the number of {_group_phrase(*group)} in the image"
        return f"{stem} {n}?", f"{stem} {wrong}?"
    if category == "color":
        obj = rng.choice(scene.objects)
        ref = _color_reference(scene, obj)
        return f"Is {ref} {obj.color}?", f"Is {ref} {rng.choice([c for c in COLORS if c != obj.color])}?"
    if category == "position":
        obj = rng.choice(scene.objects)
        wrong = rng.choice([c for c in range(len(CELLS)) if c != obj.cell])
        return f"Is the {obj.name} at the {CELLS[obj.cell]}?", f"Is the {obj.name} at the {CELLS[wrong]}?"
    if category == "OCR":
        wrong = rng.choice([d for d in digits if d != scene.digit])
        return f"Is the digit in the image {scene.digit}?", f"Is the digit in the image {wrong}?"
    if category == "numerical_calculation":
        k = rng.randint(1, _MAX_ADDEND)
        total = scene.digit + k
        wrong = rng.choice([t for t in (total - 2, total - 1, total + 1, total + 2) if t >= k])
        return (
            f"Is the digit in the image plus {k} equal to {total}?",
            f"Is the digit in the image plus {k} equal to {wrong}?",
        )
    if category == "comparison":
        more, less = rng.choice(_comparable_groups(scene))
        a, b = _group_phrase(*more), _group_phrase(*less)
        return f"Are there more {a} than {b} in the image?", f"Are there more {b} than {a} in the image?"
    a, b = rng.sample(scene.objects, 2)  # spatial_relation
    direction = _relation(a, b, rng)
    return tuple(f"Is the {a.name} {_PHRASES[d]} the {b.name}?" for d in (direction, _OPPOSITE[direction]))


def _short_answer(scene: Scene, category: str, rng: random.Random) -> tuple[str, str]:
    """The (question, answer) of a short-answer question."""
    if category == "existence":
        yes, no = _pair_questions(scene, category, rng, DIGITS)
        return (yes, "yes") if rng.random() < 0.5 else (no, "no")
    if category == "count":
        group = _count_group(rng)
        return f"How many {_group_phrase(*group)} are there in the image?", str(scene.count(*group))
    if category in ("color", "position"):
        obj = rng.choice(scene.objects)
        if category == "color":
            return f"What color is {_color_reference(scene, obj)}?", obj.color
        return f"Where is the {obj.name}?", CELLS[obj.cell]
    if category == "OCR":
        return "What digit is shown in the image?", str(scene.digit)
    if category == "numerical_calculation":
        k = rng.randint(1, _MAX_ADDEND)
        return f"What is the digit in the image plus {k}?", str(scene.digit + k)
    if category == "comparison":
        more, less = rng.choice(_comparable_groups(scene))
        a, b = _group_phrase(*more), _group_phrase(*less)
        first, second = (a, b) if rng.random() < 0.5 else (b, a)
        return f"Which are there more of, {first} or {second}?", a
    a, b = rng.sample(scene.objects, 2)  # spatial_relation
    direction = _relation(a, b, rng)
    options = "to the left or to the right of" if direction in ("left", "right") else "above or below"
    return f"Is the {a.name} {options} the {b.name}?", direction


def askable_scene(rng: random.Random, category: str, digits: tuple[int, ...] = DIGITS) -> Scene:
    """The first scene `rng` draws (with a digit of `digits`) about which `category` can be asked."""
    scene = sample_scene(rng, digits)
    while not can_ask(scene, category):
        scene = sample_scene(rng, digits)
    return scene


def _check(scene: Scene, category: str) -> None:
    if not can_ask(scene, category):
        raise ValueError(f"category {category!r} cannot be asked about scene {scene.describe()!r}")


def yes_no_pair(
    scene: Scene, category: str, rng: random.Random, digits: tuple[int, ...] = DIGITS
) -> tuple[Question, Question]:
    """Two MME-style questions about `scene`: the first answered "Yes", the second "No".
    `digits`: the digits the scene was drawn from; OCR's "No" names another one of them."""
    _check(scene, category)
    if category == "OCR" and scene.digit not in digits:
        raise ValueError(f"scene {scene.describe()!r} holds digit {scene.digit}, not one of {digits}")
    yes, no = _pair_questions(scene, category, rng, digits)
    return Question(category, yes, YES, "yes_no"), Question(category, no, NO, "yes_no")


def short_question(scene: Scene, category: str, rng: random.Random) -> Question:
    """One VQA-style question about `scene` with a single-word/phrase answer (lower case)."""
    _check(scene, category)
    return Question(category, *_short_answer(scene, category, rng), "short")


def sample_questions(
    scene: Scene,
    rng: random.Random,
    n: int,
    categories: tuple[str, ...] = CATEGORIES,
    yes_no_ratio: float = 0.5,
    weights: Mapping[str, float] | None = None,
    digits: tuple[int, ...] = DIGITS,
) -> list[Question]:
    """Up to `n` questions about `scene`, each from a different askable category in `categories`
    (drawn uniformly, or in proportion to `weights`, default 1 per category, without replacement);
    each is a yes/no question (with probability `yes_no_ratio`; "Yes" or "No" with equal odds) or
    a short-answer one. `digits`: the digits the scene was drawn from (see `yes_no_pair`)."""
    askable = [c for c in categories if can_ask(scene, c)]
    k = min(n, len(askable))
    if weights is None:
        chosen = rng.sample(askable, k)
    else:
        chosen = []
        for _ in range(k):
            chosen.append(rng.choices(askable, weights=[weights.get(c, 1.0) for c in askable])[0])
            askable.remove(chosen[-1])
    return [
        rng.choice(yes_no_pair(scene, c, rng, digits))
        if rng.random() < yes_no_ratio
        else short_question(scene, c, rng)
        for c in chosen
    ]
