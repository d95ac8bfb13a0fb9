"""Questions about scenes, by category, mirroring MME's perception/cognition split.

Two kinds of question are generated for a scene and a category:

- **yes/no pairs** (MME style): two questions on one image, one answered "Yes" and one "No",
  built as hard negatives of each other (same wording, one fact changed: the other colour, the
  swapped comparison, the opposite direction...). Each prompt ends with MME's suffix
  `YES_NO_SUFFIX`. Scoring a pair with acc and acc+ (both right) is what MME does.
- **short answers** (VQA style): one question with a single-word or short-phrase answer; the
  prompt ends with LLaVA's `SHORT_ANSWER_SUFFIX`.

Not every category can be asked about every scene (a comparison needs two groups of different
sizes); `can_ask` says which can.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import random
from collections.abc import Callable, Mapping

from llava.playground.scenes import CELLS, COLORS, DIGITS, SHAPES, Scene, SceneObject

PERCEPTION_CATEGORIES = ("existence", "count", "color", "position", "OCR")
COGNITION_CATEGORIES = ("numerical_calculation", "comparison", "spatial_relation")
CATEGORIES = PERCEPTION_CATEGORIES + COGNITION_CATEGORIES

YES_NO_SUFFIX = " Please answer yes or no."
SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
YES, NO = "Yes", "No"

# Chance level of a yes/no pair under MME's scoring: acc 0.5, acc+ (both right) 0.25, so a
# category's score (acc x 100 + acc+ x 100, max 200) is 75 by guessing.
YES_NO_CHANCE = {"acc": 0.5, "acc_plus": 0.25, "score": 75.0}

_MAX_ADDEND = 5


def short_answer_chance(digits: tuple[int, ...] = DIGITS) -> dict[str, float]:
    """Accuracy of guessing uniformly among the answers a short question of each category allows,
    in a world whose scenes hold one of `digits`."""
    return {
        "existence": 1 / 2,
        "count": 1 / 4,  # 0..3
        "color": 1 / len(COLORS),
        "position": 1 / len(CELLS),
        "OCR": 1 / len(digits),
        "numerical_calculation": 1 / len(digits),  # digit + k: one sum per digit for a given k
        "comparison": 1 / 2,
        "spatial_relation": 1 / 2,
    }


def yes_no_p_value(score: float, images: int) -> float:
    """One-sided p-value of an MME-style category score against guessing: the probability that a
    model answering each of the `images` x 2 questions by a fair coin scores `score` or more.

    Exact: per image, 0 / 1 / 2 right answers (odds 1/4, 1/2, 1/4) add 0 / 1 / 4 units of
    100 / (2 x images) to the score (each right answer 1 unit of acc, both right 2 more of acc+).
    """
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    observed = max(0, math.ceil(score * 2 * images / 100 - 1e-9))
    tails = _guessed_tails(images)
    return min(1.0, tails[observed]) if observed < len(tails) else 0.0


@functools.lru_cache(maxsize=16)
def _guessed_tails(images: int) -> tuple[float, ...]:
    """P(a guessed category's score >= u units) for every u (see `yes_no_p_value`)."""
    per_image = {0: 0.25, 1: 0.5, 4: 0.25}
    dist = [1.0]
    for _ in range(images):
        grown = [0.0] * (len(dist) + 4)
        for units, p in enumerate(dist):
            for step, q in per_image.items():
                grown[units + step] += p * q
        dist = grown
    return tuple(itertools.accumulate(reversed(dist)))[::-1]


_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles"}
_DIRECTIONS = {"left": "right", "right": "left", "above": "below", "below": "above"}


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
        return _PLURALS[shape]
    return f"{color} shapes" if color is not None else "shapes"


def _comparable_groups(
    scene: Scene,
) -> list[tuple[tuple[str | None, str | None], tuple[str | None, str | None]]]:
    """Pairs of groups (two colours or two shapes) with different sizes, larger group first."""
    pairs = []
    for kind, values in (("color", tuple(COLORS)), ("shape", SHAPES)):
        for i, a in enumerate(values):
            for b in values[i + 1 :]:
                group_a = (a, None) if kind == "color" else (None, a)
                group_b = (b, None) if kind == "color" else (None, b)
                count_a, count_b = scene.count(*group_a), scene.count(*group_b)
                if count_a != count_b:
                    pairs.append((group_a, group_b) if count_a > count_b else (group_b, group_a))
    return pairs


def _relation(a: SceneObject, b: SceneObject, rng: random.Random) -> str:
    """A true direction of `a` relative to `b` ("left", "right", "above", "below")."""
    options = []
    if a.column != b.column:
        options.append("left" if a.column < b.column else "right")
    if a.row != b.row:
        options.append("above" if a.row < b.row else "below")
    return rng.choice(options)


def _relation_question(a: SceneObject, b: SceneObject, direction: str) -> str:
    phrase = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}[
        direction
    ]
    return f"Is the {a.name} {phrase} the {b.name}?"


def _color_reference(scene: Scene, obj: SceneObject) -> str:
    """How a colour question names `obj`: by its shape when that shape is unique, else by cell."""
    if scene.count(shape=obj.shape) == 1:
        return f"the {obj.shape}"
    return f"the shape at the {CELLS[obj.cell]}"


def can_ask(scene: Scene, category: str) -> bool:
    """Whether `category` has a question with a well-defined answer about `scene`."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    if category == "comparison":
        return bool(_comparable_groups(scene))
    if category == "spatial_relation":
        return len(scene.objects) >= 2
    return True


def _yes_no(category: str, yes: str, no: str) -> tuple[Question, Question]:
    return Question(category, yes, YES, "yes_no"), Question(category, no, NO, "yes_no")


def _pair_existence(scene: Scene, rng: random.Random) -> tuple[Question, Question]:
    present = rng.choice(scene.objects)
    absent = [(c, s) for c in COLORS for s in SHAPES if scene.count(c, s) == 0]
    # Hard negatives first: an absent pair sharing the colour or the shape of a present object.
    hard = [(c, s) for c, s in absent if scene.count(color=c) or scene.count(shape=s)]
    color, shape = rng.choice(hard or absent)
    return _yes_no(
        "existence", f"Is there a {present.name} in the image?", f"Is there a {color} {shape} in the image?"
    )


def _count_group(rng: random.Random) -> tuple[str | None, str | None]:
    kind = rng.choice(("color", "shape", "all"))
    if kind == "color":
        return rng.choice(tuple(COLORS)), None
    if kind == "shape":
        return None, rng.choice(SHAPES)
    return None, None


def _pair_count(scene: Scene, rng: random.Random) -> tuple[Question, Question]:
    group = _count_group(rng)
    n = scene.count(*group)
    wrong = rng.choice([m for m in (n - 1, n + 1) if 0 <= m <= len(CELLS) - 1])
    phrase = _group_phrase(*group)
    return _yes_no(
        "count",
        f"Is the number of {phrase} in the image {n}?",
        f"Is the number of {phrase} in the image {wrong}?",
    )


def _pair_color(scene: Scene, rng: random.Random) -> tuple[Question, Question]:
    obj = rng.choice(scene.objects)
    ref = _color_reference(scene, obj)
    wrong = rng.choice([c for c in COLORS if c != obj.color])
    return _yes_no("color", f"Is {ref} {obj.color}?", f"Is {ref} {wrong}?")


def _pair_position(scene: Scene, rng: random.Random) -> tuple[Question, Question]:
    obj = rng.choice(scene.objects)
    wrong = rng.choice([c for c in range(len(CELLS)) if c != obj.cell])
    return _yes_no(
        "position",
        f"Is the {obj.name} at the {CELLS[obj.cell]}?",
        f"Is the {obj.name} at the {CELLS[wrong]}?",
    )


def _pair_ocr(scene: Scene, rng: random.Random, digits: tuple[int, ...]) -> tuple[Question, Question]:
    wrong = rng.choice([d for d in digits if d != scene.digit])
    return _yes_no("OCR", f"Is the digit in the image {scene.digit}?", f"Is the digit in the image {wrong}?")


def _pair_numerical(scene: Scene, rng: random.Random) -> tuple[Question, Question]:
    k = rng.randint(1, _MAX_ADDEND)
    total = scene.digit + k
    wrong = rng.choice([t for t in (total - 2, total - 1, total + 1, total + 2) if t >= k])
    stem = f"Is the digit in the image plus {k} equal to"
    return _yes_no("numerical_calculation", f"{stem} {total}?", f"{stem} {wrong}?")


def _pair_comparison(scene: Scene, rng: random.Random) -> tuple[Question, Question]:
    more, less = rng.choice(_comparable_groups(scene))
    a, b = _group_phrase(*more), _group_phrase(*less)
    return _yes_no(
        "comparison",
        f"Are there more {a} than {b} in the image?",
        f"Are there more {b} than {a} in the image?",
    )


def _pair_spatial(scene: Scene, rng: random.Random) -> tuple[Question, Question]:
    a, b = rng.sample(scene.objects, 2)
    direction = _relation(a, b, rng)
    return _yes_no(
        "spatial_relation",
        _relation_question(a, b, direction),
        _relation_question(a, b, _DIRECTIONS[direction]),
    )


def _short(category: str, question: str, answer: str) -> Question:
    return Question(category, question, answer, "short")


def _short_count(scene: Scene, rng: random.Random) -> Question:
    group = _count_group(rng)
    return _short(
        "count", f"How many {_group_phrase(*group)} are there in the image?", str(scene.count(*group))
    )


def _short_color(scene: Scene, rng: random.Random) -> Question:
    obj = rng.choice(scene.objects)
    return _short("color", f"What color is {_color_reference(scene, obj)}?", obj.color)


def _short_position(scene: Scene, rng: random.Random) -> Question:
    obj = rng.choice(scene.objects)
    return _short("position", f"Where is the {obj.name}?", CELLS[obj.cell])


def _short_ocr(scene: Scene, rng: random.Random) -> Question:
    return _short("OCR", "What digit is shown in the image?", str(scene.digit))


def _short_numerical(scene: Scene, rng: random.Random) -> Question:
    k = rng.randint(1, _MAX_ADDEND)
    return _short("numerical_calculation", f"What is the digit in the image plus {k}?", str(scene.digit + k))


def _short_comparison(scene: Scene, rng: random.Random) -> Question:
    more, less = rng.choice(_comparable_groups(scene))
    a, b = _group_phrase(*more), _group_phrase(*less)
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    return _short("comparison", f"Which are there more of, {first} or {second}?", a)


def _short_spatial(scene: Scene, rng: random.Random) -> Question:
    a, b = rng.sample(scene.objects, 2)
    direction = _relation(a, b, rng)
    options = "to the left or to the right of" if direction in ("left", "right") else "above or below"
    return _short("spatial_relation", f"Is the {a.name} {options} the {b.name}?", direction)


# Every category but OCR, whose "No" names another digit of the world's (`yes_no_pair`).
_PAIR_BUILDERS: dict[str, Callable[[Scene, random.Random], tuple[Question, Question]]] = {
    "existence": _pair_existence,
    "count": _pair_count,
    "color": _pair_color,
    "position": _pair_position,
    "numerical_calculation": _pair_numerical,
    "comparison": _pair_comparison,
    "spatial_relation": _pair_spatial,
}


def _short_existence_question(scene: Scene, rng: random.Random) -> Question:
    yes, no = _pair_existence(scene, rng)
    chosen = yes if rng.random() < 0.5 else no
    return _short("existence", chosen.question, chosen.answer.lower())


_SHORT_BUILDERS: dict[str, Callable[[Scene, random.Random], Question]] = {
    "existence": _short_existence_question,
    "count": _short_count,
    "color": _short_color,
    "position": _short_position,
    "OCR": _short_ocr,
    "numerical_calculation": _short_numerical,
    "comparison": _short_comparison,
    "spatial_relation": _short_spatial,
}


def _check(scene: Scene, category: str) -> None:
    if not can_ask(scene, category):
        raise ValueError(f"category {category!r} cannot be asked about scene {scene.describe()!r}")


def yes_no_pair(
    scene: Scene, category: str, rng: random.Random, digits: tuple[int, ...] = DIGITS
) -> tuple[Question, Question]:
    """Two MME-style questions about `scene`: the first answered "Yes", the second "No".
    `digits`: the digits the scene was drawn from; OCR's "No" names another one of them."""
    _check(scene, category)
    if category == "OCR":
        if scene.digit not in digits:
            raise ValueError(f"scene {scene.describe()!r} holds digit {scene.digit}, not one of {digits}")
        return _pair_ocr(scene, rng, digits)
    return _PAIR_BUILDERS[category](scene, rng)


def short_question(scene: Scene, category: str, rng: random.Random) -> Question:
    """One VQA-style question about `scene` with a single-word/phrase answer (lower case)."""
    _check(scene, category)
    return _SHORT_BUILDERS[category](scene, rng)


def askable_categories(scene: Scene) -> tuple[str, ...]:
    return tuple(c for c in CATEGORIES if can_ask(scene, c))


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
            pick = rng.choices(askable, weights=[weights.get(c, 1.0) for c in askable])[0]
            askable.remove(pick)
            chosen.append(pick)
    questions = []
    for category in chosen:
        if rng.random() < yes_no_ratio:
            questions.append(rng.choice(yes_no_pair(scene, category, rng, digits)))
        else:
            questions.append(short_question(scene, category, rng))
    return questions
