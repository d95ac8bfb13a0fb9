"""VQAv2 val scored locally: the official vqaEval.py accuracy (its normalisation and quirks), per
answer and question type, the expected questions, coverage."""

import json

import pytest

from llava.eval import eval_vqav2, question_files
from llava.eval.answer_processor import process_punctuation, vqa_accuracy
from llava.eval.scoring_io import CoverageError
from tests.eval.benchmark_files import VQAV2_ANSWERS, write_vqav2

# Per question of the fixture: an answer and its accuracy by hand.
ANSWERS = [
    # ten "yes", the prediction lower-cased by the digit/article step: 10 matches -> 1.0
    ("Yes", 1.0),
    # "Two." -> "2"; the human answers disagree, so they get the punctuation step only and the
    # three "two" stay words: 2 matches. Leaving a "2" out: 1/3 (x2); another: 2/3 (x8) -> 0.6
    ("Two.", 0.6),
    # "a hot dog" -> "hot dog"; "hot-dog" -> "hot dog" (the hyphen touches no space): 3 matches.
    # Leaving a match out: 2/3 (x3); another: 1 (x7) -> 0.9
    ("a hot dog", 0.9),
    ("dogs", 0.0),
    # Ten identical answers are compared as annotated: "t-shirt" != "t shirt" (the prediction's
    # hyphen became a space) -> 0, a quirk of the official tool
    ("t-shirt", 0.0),
]


@pytest.mark.parametrize(("index", "expected"), [(i, acc) for i, (_, acc) in enumerate(ANSWERS)])
def test_official_accuracy_per_question(index, expected):
    gts = VQAV2_ANSWERS[index][2]
    assert eval_vqav2.vqa_eval_accuracy(ANSWERS[index][0], gts) == pytest.approx(expected)


def test_official_rule_differs_from_the_evalai_processor():
    # The EvalAI processor (TextVQA, the test-dev upload) maps the human "two" to "2" as well.
    assert vqa_accuracy("Two.", VQAV2_ANSWERS[1][2]) == pytest.approx(1.0)
    # A single comma between digits is the official test; EvalAI's also takes "1,,000".
    assert eval_vqav2.official_punctuation("1,000 m") == "1000 m"
    assert eval_vqav2.official_punctuation("1,,000") == "1  000"
    assert process_punctuation("1,,000") == "1000"
    # Newlines and tabs in the prediction are spaces.
    assert eval_vqav2.vqa_eval_accuracy("\tyes\n", ["yes"] * 10) == 1.0


def _files(tmp_path, write_jsonl, texts):
    questions, annotations = write_vqav2(tmp_path)
    q_file = question_files.main(
        ["vqav2_val", "--questions", str(questions), "--out", str(tmp_path / "q.jsonl")]
    )
    lines = [json.loads(x) for x in q_file.read_text().splitlines()]
    answers = [
        {"question_id": q["question_id"], "prompt": q["text"], "text": t}
        for q, t in zip(lines, texts, strict=False)
    ]
    return annotations, q_file, write_jsonl(tmp_path / "answers.jsonl", answers)


def test_scores_overall_and_per_type(tmp_path, write_jsonl, capsys):
    annotations, q_file, answers = _files(tmp_path, write_jsonl, [text for text, _ in ANSWERS])
    res = tmp_path / "vqav2_val.json"
    scores = eval_vqav2.main(
        ["--annotation-file", str(annotations), "--result-file", str(answers), "--question-file", str(q_file),
         "--results-json", str(res)]
    )  # fmt: skip
    # (1.0 + 0.6 + 0.9 + 0 + 0) / 5 = 0.5; yes/no 1.0; number 0.6; other (0.9 + 0 + 0) / 3 = 0.3
    assert scores.overall == pytest.approx(50.0) and scores.count == 5
    assert scores.answer_types == pytest.approx({"yes/no": 100.0, "number": 60.0, "other": 30.0})
    assert list(scores.answer_types) == ["yes/no", "number", "other"]
    # "what is": (0.9 + 0) / 2
    assert scores.question_types == pytest.approx(
        {"how many": 60.0, "is the": 100.0, "what animal is": 0.0, "what is": 45.0}
    )
    out = capsys.readouterr().out
    assert "Samples: 5\nOverall Accuracy: 50.00%\nyes/no: 100.00%\nnumber: 60.00%\nother: 30.00%" in out
    saved = json.loads(res.read_text())
    assert saved["score"] == pytest.approx(50.0) and saved["question_types"]["what is"] == pytest.approx(45.0)


def test_expected_questions_follow_the_question_file(tmp_path, write_jsonl):
    annotations, q_file, answers = _files(tmp_path, write_jsonl, ["Yes", "2"])
    # A question file of the first two questions: those two are expected, and scored.
    lines = q_file.read_text().splitlines()
    q_file.write_text("\n".join(lines[:2]) + "\n")
    args = ["--annotation-file", str(annotations), "--result-file", str(answers)]
    scores = eval_vqav2.main([*args, "--question-file", str(q_file)])
    assert scores.count == 2
    # Without it, every annotated question is expected.
    with pytest.raises(
        CoverageError,
        match=r"answers.jsonl: 2 of 5 expected question\(s\) answered; 3 missing \(e.g. '393225000'",
    ):
        eval_vqav2.main(args)
    # A question the annotations lack: another split's question file.
    q_file.write_text(lines[0] + "\n" + json.dumps({"question_id": 1, "image": "x.jpg", "text": "?"}) + "\n")
    with pytest.raises(ValueError, match=r"q.jsonl: 1 question\(s\) have no annotation \(e.g. \['1'\]\)"):
        eval_vqav2.main([*args, "--question-file", str(q_file)])


def test_extra_and_duplicated_answers_are_refused(tmp_path, write_jsonl):
    annotations, _, answers = _files(tmp_path, write_jsonl, [text for text, _ in ANSWERS])
    lines = [json.loads(x) for x in answers.read_text().splitlines()]
    args = ["--annotation-file", str(annotations), "--result-file", str(answers)]
    write_jsonl(answers, [*lines, {**lines[0], "question_id": 42}])
    with pytest.raises(CoverageError, match=r"1 extra, not among the questions \(e.g. '42'\)"):
        eval_vqav2.main(args)
    write_jsonl(answers, [*lines, lines[1]])
    with pytest.raises(CoverageError, match=r"1 answered more than once \(e.g. '262148001' x2\)"):
        eval_vqav2.main(args)


def test_annotation_needs_ten_answers(tmp_path):
    _, annotations = write_vqav2(tmp_path)
    data = json.loads(annotations.read_text())
    data["annotations"][2]["answers"] = data["annotations"][2]["answers"][:9]
    with pytest.raises(ValueError, match=r"annotations.json: annotations\[2\]: expected 10 answers, got 9"):
        eval_vqav2.read_annotations(data, str(annotations))
