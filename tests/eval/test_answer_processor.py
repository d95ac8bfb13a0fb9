"""The EvalAI answer processor and VQA accuracy, on the examples documented at
https://visualqa.org/evaluation.html and the reference code's quirks."""

import pytest

from llava.eval.answer_processor import (
    CONTRACTIONS,
    normalize_answer,
    process_punctuation,
    tokenize,
    vqa_accuracy,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Dont", "don't"),  # documented: missing apostrophe added
        ("100,978", "100978"),  # documented: no space inserted in a digit comma
        ("2:50 pm", "2:50 pm"),  # documented: colons kept
        ("3.5", "3.5"),  # documented: decimal periods kept
        ("Yes.", "yes"),  # other periods removed
        ("The cat", "cat"),  # articles dropped
        ("a an the", ""),
        ("Two", "2"),  # number words -> digits
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("eleven", "eleven"),  # only none/zero..ten are mapped
        ("What?", "what"),  # "?" deleted in step 1
        ("girl's", "girl 's"),  # EvalAI splits "'s" off; the apostrophe stays
        ("hi-fi", "hi fi"),  # a mark not touching a space becomes a space
        ("hi - fi", "hi fi"),  # a mark touching a space is deleted
        ("yes\nno\tmaybe", "yes no maybe"),
        ("whats that", "what's that"),
        ("yall", "y'all"),
        ("Im", "im"),  # the map's "Im" key can never match lower-cased text
        ("somebody'd", "somebodyd"),  # a quirk of the reference map, kept
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_touching_space_is_checked_on_the_whole_text():
    # "-" touches a space in " -d", so every "-" is deleted, also the one in "a-b".
    assert normalize_answer("a-b c -d") == "ab c d"


def test_digit_comma_rule_deletes_all_marks():
    # Called directly (the official vqaEval order, no step 1): a digit,digit comma anywhere
    # makes every mark vanish instead of becoming a space.
    assert process_punctuation("x(y)z 1,2") == "xyz 12"
    assert process_punctuation("x(y)z") == "x y z"


def test_tokenize_drops_commas_first():
    # After step 1 there is no comma left, so "1,000 (approx)" keeps "(" as a space-toucher.
    assert tokenize("1,000 (Approx)?") == "1000 (approx)"
    assert normalize_answer("1,000 (Approx)?") == "1000 approx"


def test_at_most_32_periods_are_removed():
    # The reference passes re.UNICODE (32) as the `count` of re.sub.
    assert normalize_answer("x." * 40) == "x" * 32 + "x." * 8


def test_contraction_map_is_the_full_standard_one():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["wouldn'tve"] == "wouldn't've"
    assert CONTRACTIONS["oclock"] == "o'clock"


@pytest.mark.parametrize(
    ("prediction", "gts", "expected"),
    [
        # 3 matches: leaving out a match -> 2/3 (3 times), else 3/3 (7 times): (2 + 7) / 10
        ("yes", ["yes"] * 3 + ["no"] * 7, 0.9),
        # 4+ matches: every subset still holds >= 3
        ("yes", ["yes"] * 4 + ["no"] * 6, 1.0),
        # 1 match: 0 when it is left out, else 1/3 (9 times): 3 / 10
        ("yes", ["yes"] + ["no"] * 9, 0.3),
        # 2 matches: 1/3 twice, 2/3 eight times: (2/3 + 16/3) / 10
        ("yes", ["yes"] * 2 + ["no"] * 8, 0.6),
        ("maybe", ["yes"] * 10, 0.0),
        # normalisation on both sides: "Two." -> "2", "two" -> "2"
        ("Two.", ["two", "2", "2 "] + ["3"] * 7, 0.9),
    ],
)
def test_vqa_accuracy(prediction, gts, expected):
    assert vqa_accuracy(prediction, gts) == pytest.approx(expected)


def test_vqa_accuracy_needs_answers():
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("yes", [])
