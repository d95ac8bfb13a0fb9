"""The EvalAI / VQA answer normaliser and the VQA accuracy (VQAv2, VizWiz, TextVQA).

Protocol: https://visualqa.org/evaluation.html and the reference implementation
https://github.com/GT-Vision-Lab/VQA/blob/master/PythonEvaluationTools/vqaEvaluation/vqaEval.py,
in the EvalAI flavour that LLaVA-1.5 applies before submission and for TextVQA
(https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md). Published numbers were
produced with the reference code, quirks included, so the quirks are kept and marked below.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Marks that are deleted or turned into a space (step 2). Apostrophes and colons are kept
# on purpose ("girl's", "2:50 pm").
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# The standard VQA contraction map, entry for entry. Quirks of the reference table are kept:
# keys with capitals ("Im", "Ive", "Id've", "I'dve") can never match lower-cased text, and
# "somebody'd" maps to "somebodyd".
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip

_DIGIT_COMMA = re.compile(r"(?<=\d),+(?=\d)")
# The official VQA evaluation (vqaEval.py) looks for a single comma between two digits.
VQA_EVAL_DIGIT_COMMA = re.compile(r"\d,\d")
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")
# The reference passes re.UNICODE (== 32) where `re.sub` expects `count`, so at most 32
# periods are removed per answer. Kept for bit-exact scores.
_PERIOD_SUB_COUNT = int(re.UNICODE)


def tokenize(text: str) -> str:
    """Step 1: lower-case, drop commas and question marks, split off "'s", flatten whitespace."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str, digit_comma: re.Pattern[str] = _DIGIT_COMMA) -> str:
    """Steps 2-3: punctuation to nothing or a space, then periods that are not decimals.

    A mark is deleted when it touches a space anywhere in the text, or when the text holds a
    digit,digit comma (the reference tests the text as it entered this step, not the text
    being rewritten); otherwise it becomes a space, so "hi-fi" -> "hi fi". `digit_comma` is that
    test: EvalAI's (one or more commas) by default, `VQA_EVAL_DIGIT_COMMA` for the official VQA
    evaluation.
    """
    has_digit_comma = digit_comma.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if touches_space or has_digit_comma else " ")
    return _PERIOD_NOT_DECIMAL.sub("", out, count=_PERIOD_SUB_COUNT)


def process_digits_articles(text: str) -> str:
    """Steps 4-5: number words to digits, articles dropped, missing apostrophes restored."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(text: str) -> str:
    """The full EvalAI answer processor: what LLaVA applies to VQAv2/VizWiz/TextVQA answers."""
    return process_digits_articles(process_punctuation(tokenize(text)))


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """VQA accuracy of one prediction against the human answers (usually 10), in [0, 1].

    Prediction and ground truth are normalised; for each human answer left out in turn the
    score is min(1, matches among the others / 3), and the leave-one-out scores are averaged.
    https://visualqa.org/evaluation.html ("averaged over all 10 choose 9 sets").
    """
    if not gt_answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    pred = normalize_answer(prediction)
    gts = [normalize_answer(answer) for answer in gt_answers]
    total_matches = sum(gt == pred for gt in gts)
    scores = [min(1.0, (total_matches - (gt == pred)) / 3.0) for gt in gts]
    return sum(scores) / len(scores)
