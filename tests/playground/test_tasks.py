"""Question generators: ground truth on hand-checked scenes, yes/no balance, askability."""

import random
from collections import Counter

import pytest

from llava.playground.scenes import Scene, SceneObject, sample_scenes
from llava.playground.tasks import (
    CATEGORIES,
    COGNITION_CATEGORIES,
    NO,
    PERCEPTION_CATEGORIES,
    SHORT_ANSWER_SUFFIX,
    YES,
    YES_NO_SUFFIX,
    can_ask,
    sample_questions,
    short_answer_chance,
    short_question,
    yes_no_pair,
)
from tests.playground.scene_helpers import HAND_SCENE


def _answers(category: str, n: int = 200) -> dict[str, str]:
    """question -> answer (lower case) over many draws on the hand-made scene."""
    rng = random.Random(0)
    found: dict[str, str] = {}
    for _ in range(n):
        for question in (
            *yes_no_pair(HAND_SCENE, category, rng),
            short_question(HAND_SCENE, category, rng),
        ):
            answer = question.answer.lower()
            assert found.setdefault(question.question, answer) == answer
    return found


def test_category_split_mirrors_mme():
    assert PERCEPTION_CATEGORIES == ("existence", "count", "color", "position", "OCR")
    assert COGNITION_CATEGORIES == ("numerical_calculation", "comparison", "spatial_relation")
    assert set(CATEGORIES) == set(PERCEPTION_CATEGORIES) | set(COGNITION_CATEGORIES)


@pytest.mark.parametrize(
    ("category", "question", "answer"),
    [
        ("count", "How many red shapes are there in the image?", "2"),
        ("count", "How many circles are there in the image?", "2"),
        ("count", "How many triangles are there in the image?", "0"),
        ("count", "How many shapes are there in the image?", "3"),
        ("count", "Is the number of red shapes in the image 2?", YES),
        ("count", "Is the number of red shapes in the image 1?", NO),
        ("color", "What color is the square?", "red"),
        ("color", "What color is the shape at the bottom left?", "blue"),
        ("color", "Is the square red?", YES),
        ("position", "Where is the blue circle?", "bottom left"),
        ("position", "Is the red square at the bottom right?", YES),
        ("existence", "Is there a red square in the image?", YES),
        ("OCR", "What digit is shown in the image?", "7"),
        ("OCR", "Is the digit in the image 7?", YES),
        ("numerical_calculation", "What is the digit in the image plus 3?", "10"),
        ("comparison", "Are there more red shapes than blue shapes in the image?", YES),
        ("comparison", "Are there more blue shapes than red shapes in the image?", NO),
        ("comparison", "Which are there more of, circles or squares?", "circles"),
        ("spatial_relation", "Is the red circle above the blue circle?", YES),
        ("spatial_relation", "Is the red circle below the blue circle?", NO),
        ("spatial_relation", "Is the blue circle to the left or to the right of the red square?", "left"),
    ],
)
def test_ground_truth_on_a_hand_checked_scene(category, question, answer):
    answers = _answers(category)
    assert question in answers, f"{question!r} never generated; got {sorted(answers)}"
    assert answers[question] == answer.lower()


def test_every_yes_no_pair_is_one_yes_and_one_no_with_the_mme_suffix():
    rng = random.Random(1)
    for scene in sample_scenes(rng, 200):
        for category in CATEGORIES:
            if not can_ask(scene, category):
                continue
            yes, no = yes_no_pair(scene, category, rng)
            assert (yes.answer, no.answer) == (YES, NO)
            assert yes.question != no.question
            assert yes.text.endswith(YES_NO_SUFFIX) and no.text.endswith(YES_NO_SUFFIX)
            assert short_question(scene, category, rng).text.endswith(SHORT_ANSWER_SUFFIX)


def test_existence_negatives_are_absent_objects():
    rng = random.Random(2)
    for scene in sample_scenes(rng, 100):
        yes, no = yes_no_pair(scene, "existence", rng)
        names = {o.name for o in scene.objects}
        assert yes.question.removeprefix("Is there a ").removesuffix(" in the image?") in names
        assert no.question.removeprefix("Is there a ").removesuffix(" in the image?") not in names


def test_sampled_questions_are_balanced_between_yes_and_no():
    rng = random.Random(3)
    answers = Counter(
        q.answer for s in sample_scenes(rng, 2000) for q in sample_questions(s, rng, 8, yes_no_ratio=1.0)
    )
    assert set(answers) == {YES, NO}
    assert abs(answers[YES] - answers[NO]) / sum(answers.values()) < 0.03


def test_category_weights_set_the_odds_of_each_category():
    scenes = sample_scenes(random.Random(4), 3000)
    rng = random.Random(5)
    weights = {"OCR": 3.0, "numerical_calculation": 3.0}
    drawn = Counter(q.category for s in scenes for q in sample_questions(s, rng, 1, weights=weights))
    # one question per scene: OCR (always askable) has odds 3 against a total of 12 (or 11 without comparison)
    assert 0.25 < drawn["OCR"] / len(scenes) < 0.30
    assert 0.20 < drawn["existence"] / drawn["OCR"] < 0.45
    several = [sample_questions(s, rng, 4, weights=weights) for s in scenes[:500]]
    assert all(len({q.category for q in qs}) == 4 for qs in several)  # still without replacement


def test_unaskable_category_raises():
    shapes = (
        SceneObject("red", "circle", 0),
        SceneObject("green", "square", 2),
        SceneObject("blue", "triangle", 3),
    )
    scene = Scene(objects=shapes, digit=1, digit_cell=1, jitter=((0, 0, 8),) * 4)
    assert not can_ask(scene, "comparison")  # every colour and every shape appears once
    with pytest.raises(ValueError, match="cannot be asked"):
        yes_no_pair(scene, "comparison", random.Random(0))
    with pytest.raises(ValueError, match="unknown category"):
        can_ask(scene, "celebrity")


def test_ocr_negatives_and_chance_follow_the_digits_scenes_hold():
    digits = (0, 4, 9)
    rng = random.Random(3)
    scenes = sample_scenes(rng, 300, digits=digits)
    assert {s.digit for s in scenes} == set(digits)
    for scene in scenes:
        yes, no = yes_no_pair(scene, "OCR", rng, digits)
        named = int(no.question.split("?")[0].split()[-1])
        assert named in digits and named != scene.digit
        asked = sample_questions(scene, rng, 8, categories=("OCR",), yes_no_ratio=1.0, digits=digits)
        assert int(asked[0].question.split("?")[0].split()[-1]) in digits
    with pytest.raises(ValueError, match="not one of"):
        yes_no_pair(scenes[0], "OCR", rng, tuple(d for d in range(10) if d != scenes[0].digit)[:2])
    assert short_answer_chance(digits)["OCR"] == pytest.approx(1 / 3)
    assert short_answer_chance()["numerical_calculation"] == pytest.approx(1 / 10)
