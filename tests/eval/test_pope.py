"""POPE: "no" detection on the first sentence, confusion counts, yes ratio, mean F1, answers matched
to labels by id (any order), coverage, and answers of another question file refused."""

import json

import pytest

from llava.eval import run_record
from llava.eval.eval_pope import is_no, main, score_pope
from llava.eval.scoring_io import CoverageError


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


# A POPE set in the real layout: label files are JSON lines with question_id, image, text, label
# (https://github.com/RUCAIBox/POPE, output/coco/coco_pope_<category>.json); the LLaVA question
# file lists the same questions per category, with the short-answer suffix and its own ids.
SUFFIX = "\nAnswer the question using a single word or phrase."
POPE_SET = {
    "adversarial": [("a.jpg", "Is there a dog in the image?", "yes"), ("a.jpg", "Is there a cat in the image?", "no"),
                    ("b.jpg", "Is there a car in the image?", "no"), ("b.jpg", "Is there a bus in the image?", "yes")],
    "random": [("c.jpg", "Is there a cup in the image?", "yes"), ("c.jpg", "Is there a tie in the image?", "no")],
}  # fmt: skip


def pope_files(tmp_path, write_jsonl):
    """Label files and the question file; returns (annotation dir, question file, questions)."""
    questions = []
    for offset, (category, items) in enumerate(POPE_SET.items()):
        write_jsonl(
            tmp_path / "coco" / f"coco_pope_{category}.json",
            [
                {"question_id": i, "image": im, "text": q, "label": lab}
                for i, (im, q, lab) in enumerate(items)
            ],
        )
        for i, (image, question, label) in enumerate(items):
            qid = offset * 10_000_000 + i + 1
            questions.append({"question_id": qid, "image": image, "text": question + SUFFIX,
                              "category": category, "label": label})  # fmt: skip
    question_file = write_jsonl(
        tmp_path / "llava_pope_test.jsonl", [{k: v for k, v in q.items() if k != "label"} for q in questions]
    )
    return tmp_path / "coco", question_file, questions


def _pope(tmp_path, answers_file, annotation_dir, question_file, *extra):
    return main(["--annotation-dir", str(annotation_dir), "--question-file", str(question_file),
                 "--result-file", str(answers_file), *extra])  # fmt: skip


@pytest.mark.parametrize("order", ["shuffled", "resumed"])
def test_answers_are_matched_to_labels_by_id_in_any_order(tmp_path, write_jsonl, order):
    annotation_dir, question_file, questions = pope_files(tmp_path, write_jsonl)
    answers = [{"question_id": q["question_id"], "text": q["label"].capitalize()} for q in questions]
    if order == "shuffled":
        answers = answers[::-1]
    else:  # a resumed run: the answers lost in the interruption come last
        answers = answers[2:] + answers[:2]
    results = _pope(tmp_path, write_jsonl(tmp_path / "a.jsonl", answers), annotation_dir, question_file)
    # every answer equals its label: F1 1.0 everywhere (position matching gave other numbers)
    assert {name: s.f1 for name, s in results.items()} == {"adversarial": 1.0, "random": 1.0}
    assert results["adversarial"].accuracy == 1.0


def test_missing_extra_and_duplicated_answers_are_named(tmp_path, write_jsonl, capsys):
    annotation_dir, question_file, questions = pope_files(tmp_path, write_jsonl)
    answers = [{"question_id": q["question_id"], "text": q["label"]} for q in questions]
    path = tmp_path / "a.jsonl"
    write_jsonl(path, answers[1:])
    with pytest.raises(CoverageError, match=r"5 of 6 expected question\(s\) answered; 1 missing \(e.g. 1\)"):
        _pope(tmp_path, path, annotation_dir, question_file)
    write_jsonl(path, [*answers, answers[3]])
    with pytest.raises(CoverageError, match=r"1 answered more than once \(e.g. 4 x2\)"):
        _pope(tmp_path, path, annotation_dir, question_file)
    write_jsonl(path, [*answers, {"question_id": 99, "text": "yes"}])
    with pytest.raises(CoverageError, match=r"1 extra, not among the questions \(e.g. 99\)"):
        _pope(tmp_path, path, annotation_dir, question_file)
    # Opted in: only the answered questions are scored, and the counts are printed and stored.
    write_jsonl(path, answers[1:])
    res = tmp_path / "pope.json"
    results = _pope(
        tmp_path, path, annotation_dir, question_file, "--allow-missing", "--results-json", str(res)
    )
    assert sum(s.tp + s.fp + s.tn + s.fn for s in results.values()) == 5
    assert "INCOMPLETE:" in capsys.readouterr().out
    assert json.loads(res.read_text())["coverage"] == {
        "expected": 6,
        "answered": 5,
        "missing": 1,
        "extra": 0,
        "duplicated": 0,
    }


def test_allow_missing_skips_and_reports_a_wholly_unanswered_category(tmp_path, write_jsonl, capsys):
    annotation_dir, question_file, questions = pope_files(tmp_path, write_jsonl)
    answers = [
        {"question_id": q["question_id"], "text": q["label"]} for q in questions if q["category"] != "random"
    ]
    path, res = write_jsonl(tmp_path / "a.jsonl", answers), tmp_path / "pope.json"
    results = _pope(
        tmp_path, path, annotation_dir, question_file, "--allow-missing", "--results-json", str(res)
    )
    assert list(results) == ["adversarial"] and results["adversarial"].f1 == 1.0
    out = capsys.readouterr().out
    assert "Category: random, skipped: no answers" in out and "Mean F1 over 1 categories: 100.00" in out
    assert "INCOMPLETE: categories without answers, left out of the mean: random" in out
    saved = json.loads(res.read_text())
    assert saved["skipped_categories"] == ["random"] and saved["coverage"]["missing"] == 2
    assert saved["partial"] == "4 of 6 questions"  # llava.eval.report marks the score partial
    with pytest.raises(CoverageError, match=r"4 of 6 expected question\(s\) answered; 2 missing"):
        _pope(tmp_path, path, annotation_dir, question_file)  # without the flag: an error, as before


def test_label_file_of_another_pope_version_is_refused(tmp_path, write_jsonl):
    annotation_dir, question_file, questions = pope_files(tmp_path, write_jsonl)
    labels = annotation_dir / "coco_pope_random.json"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join(lines[::-1]) + "\n")  # the same questions, another order
    answers = write_jsonl(
        tmp_path / "a.jsonl", [{"question_id": q["question_id"], "text": "yes"} for q in questions]
    )
    with pytest.raises(
        ValueError,
        match=r"coco_pope_random.json: line 1 \(text 'Is there a tie in the image\?'\) does not belong",
    ):
        _pope(tmp_path, answers, annotation_dir, question_file)


def test_answers_of_another_benchmark_with_colliding_ids_are_refused(tmp_path, write_jsonl):
    annotation_dir, question_file, questions = pope_files(tmp_path, write_jsonl)
    # Answers of another question file that happens to use the same ids, with its run record.
    other = write_jsonl(tmp_path / "other" / "llava_other.jsonl",
                        [{"question_id": q["question_id"], "image": "x.jpg", "text": "What?"} for q in questions])  # fmt: skip
    answers = write_jsonl(
        tmp_path / "a.jsonl", [{"question_id": q["question_id"], "text": "yes"} for q in questions]
    )
    run_record.write_record(answers, {"format": run_record.FORMAT, "runner": run_record.LOADER_RUNNER,
                                      "question_file": run_record.question_file_identity(other)})  # fmt: skip
    with pytest.raises(
        ValueError,
        match=r"answers the questions of '.*llava_other.jsonl' .* not those of '.*llava_pope_test.jsonl'",
    ):
        _pope(tmp_path, answers, annotation_dir, question_file)
    # The same answers recorded as made from the POPE question file are scored.
    run_record.write_record(answers, {"format": run_record.FORMAT, "runner": run_record.LOADER_RUNNER,
                                      "question_file": run_record.question_file_identity(question_file)})  # fmt: skip
    assert set(_pope(tmp_path, answers, annotation_dir, question_file)) == {"adversarial", "random"}
