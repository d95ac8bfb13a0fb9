"""POPE: "no" detection on the first sentence, confusion counts, yes ratio, mean F1."""

import json

import pytest

from llava.eval.eval_pope import is_no, main, score_pope


@pytest.mark.parametrize(
    ("text", "no"),
    [
        ("No.", True),
        ("No, there is not.", True),
        ("no, there isn't", True),  # commas dropped before splitting: "no"
        ("There is not a cat.", True),
        ("Yes. There is no cat.", False),  # only the first sentence counts
        ("I don't see one.", False),  # "don't" is not one of No/not/no
        ("None", False),
        ("NO", False),  # case-sensitive words
        ("Yes", False),
    ],
)
def test_is_no(text, no):
    assert is_no(text) is no


def test_score_pope_counts():
    answers = ["Yes, a dog.", "No.", "There is not a cat.", "I don't see one.", "Yes. No other.", "no, none"]
    labels = ["yes", "no", "yes", "no", "yes", "no"]
    # preds: yes, no, no, yes, yes, no -> TP 2, FP 1, TN 2, FN 1
    s = score_pope(answers, labels, "fixture")
    assert (s.tp, s.fp, s.tn, s.fn) == (2, 1, 2, 1)
    assert s.accuracy == pytest.approx(4 / 6)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 / 3)
    assert s.yes_ratio == pytest.approx(3 / 6)


def test_score_pope_length_mismatch():
    with pytest.raises(ValueError, match="2 answers but 1 labels"):
        score_pope(["Yes", "No"], ["yes"], "coco_pope_random.json")


def test_main_groups_by_category(tmp_path, write_jsonl, capsys):
    cats = {
        "adversarial": (["yes", "no", "yes", "no", "yes", "no"],
                        ["Yes, a dog.", "No.", "There is not a cat.", "I don't see one.", "Yes. No other.", "no, none"]),
        "random": (["yes", "no"], ["Yes", "Nope"]),  # TP 1, FP 1: P 0.5, R 1, F1 2/3, yes ratio 1
        "popular": (["no", "yes"], ["No", "No"]),  # TN 1, FN 1: P = R = F1 = 0, yes ratio 0
    }  # fmt: skip
    questions, per_category, qid = [], {}, 0
    for cat, (labels, texts) in cats.items():
        write_jsonl(tmp_path / "coco" / f"coco_pope_{cat}.json", [{"label": label} for label in labels])
        for text in texts:
            questions.append({"question_id": qid, "category": cat, "text": "q"})
            per_category.setdefault(cat, []).append({"question_id": qid, "text": text})
            qid += 1
    # round-robin over the categories: interleaved in the file, in order within each category
    columns = [per_category[cat] for cat in ("random", "popular", "adversarial")]
    answers = [col[i] for i in range(6) for col in columns if i < len(col)]
    write_jsonl(tmp_path / "questions.jsonl", questions)
    write_jsonl(tmp_path / "answers.jsonl", answers)
    res = tmp_path / "pope.json"
    results = main(
        ["--annotation-dir", str(tmp_path / "coco"), "--question-file", str(tmp_path / "questions.jsonl"),
         "--result-file", str(tmp_path / "answers.jsonl"), "--results-json", str(res)]
    )  # fmt: skip
    assert results["random"].f1 == pytest.approx(2 / 3) and results["random"].yes_ratio == 1.0
    assert results["popular"].f1 == 0.0 and results["popular"].yes_ratio == 0.0
    out = capsys.readouterr().out
    assert "Category: adversarial, # samples: 6" in out and "2\t1\t2\t1" in out
    # mean F1 = (2/3 + 0 + 2/3) / 3 = 44.44
    assert "Mean F1 over 3 categories: 44.44" in out
    assert json.loads(res.read_text())["score"] == pytest.approx(400 / 9)
