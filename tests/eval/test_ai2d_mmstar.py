"""AI2D (lmms-eval's letter filter and exact match) and MMStar (the official start-of-answer rule,
6 core and 18 l2 categories): extraction edge cases, scores worked out by hand, coverage."""

import json

import pytest

from llava.eval import eval_ai2d, eval_mmstar, question_files
from llava.eval.scoring_io import CoverageError
from tests.eval.benchmark_files import write_ai2d, write_mmstar


@pytest.mark.parametrize(
    ("prediction", "right"),
    [
        ("B", True),
        ("B.", True),
        ("B. sun", True),  # the filter keeps the letter of a leading "X."
        ("  B. sun", True),  # leading spaces allowed by the filter
        ("(B)", True),  # no filter match; punctuation removed -> "b"
        ("b", True),  # case ignored
        ("b. sun", False),  # the filter wants a capital; "b sun" != "b"
        ("B) sun", False),
        ("The answer is B", False),
        ("sun", False),
        ("", False),
        ("C", False),
    ],
)
def test_ai2d_extraction(prediction, right):
    assert eval_ai2d.is_correct(prediction, "B") is right


def _mc_files(tmp_path, write_jsonl, kind, texts):
    """Question file of the fixture rows, and answers with the given texts (one a question)."""
    if kind == "ai2d":
        questions = question_files.ai2d_questions(write_ai2d(tmp_path), tmp_path / "images")
    else:
        questions = question_files.mmstar_questions([write_mmstar(tmp_path)], tmp_path / "images")
    q_file = question_files.write_question_file(tmp_path / "q.jsonl", questions)
    answers = [
        {"question_id": q["question_id"], "prompt": q["text"], "text": t}
        for q, t in zip(questions, texts, strict=True)
    ]
    return q_file, write_jsonl(tmp_path / "answers.jsonl", answers)


def test_ai2d_score(tmp_path, write_jsonl, capsys):
    # answers B, C, A: "B" right, "C) stem" wrong (-> "c stem"), "A. egg" right (the filter keeps "A")
    q_file, answers = _mc_files(tmp_path, write_jsonl, "ai2d", ["B", "C) stem", "A. egg"])
    res = tmp_path / "ai2d.json"
    scores = eval_ai2d.main(
        ["--question-file", str(q_file), "--result-file", str(answers), "--results-json", str(res)]
    )
    assert (scores.correct, scores.count) == (2, 3) and scores.accuracy == pytest.approx(200 / 3)
    assert "Samples: 3, Correct: 2, Accuracy: 66.67%" in capsys.readouterr().out
    assert json.loads(res.read_text())["score"] == pytest.approx(200 / 3)


def test_ai2d_coverage(tmp_path, write_jsonl):
    q_file, answers = _mc_files(tmp_path, write_jsonl, "ai2d", ["B", "C", "A"])
    lines = [json.loads(x) for x in answers.read_text().splitlines()]
    write_jsonl(answers, [lines[0], lines[2]])
    with pytest.raises(
        CoverageError, match=r"answers.jsonl: 2 of 3 expected question\(s\) answered; 1 missing \(e.g. '1'\)"
    ):
        eval_ai2d.main(["--question-file", str(q_file), "--result-file", str(answers)])
    write_jsonl(answers, [*lines, {**lines[0], "question_id": 99}])
    with pytest.raises(CoverageError, match=r"1 extra, not among the questions \(e.g. '99'\)"):
        eval_ai2d.main(["--question-file", str(q_file), "--result-file", str(answers)])


@pytest.mark.parametrize(
    ("prediction", "answer", "right"),
    [
        ("A", "A", True),
        ("a. The suitcase is on the book.", "A", True),
        ("(b) the cat", "B", True),
        ("Option C", "C", True),
        ("The answer is D.", "D", True),
        ("Answer: B", "A", True),  # only the first character is read: "a"
        ("Answer: B", "B", False),
        ("I think B", "B", False),
        ("(", "A", False),  # nothing after the "(": wrong, as the official IndexError
        ("", "A", False),
        ("\n  c\n", "C", True),  # stripped before reading
    ],
)
def test_mmstar_extraction(prediction, answer, right):
    assert eval_mmstar.is_correct(prediction, answer) is right


def test_mmstar_score_by_category(tmp_path, write_jsonl, capsys):
    # answers A, B, C, A: right, wrong, right ("(c)"), right ("Option a")
    q_file, answers = _mc_files(tmp_path, write_jsonl, "mmstar", ["A", "C", "(c) 3", "Option a"])
    res = tmp_path / "mmstar.json"
    scores = eval_mmstar.main(
        ["--question-file", str(q_file), "--result-file", str(answers), "--results-json", str(res)]
    )
    assert scores.overall == 75.0 and scores.count == 4
    # coarse perception: 1 of 2 (both image emotion); fine-grained: 1 of 1; math: 1 of 1
    assert scores.categories == {"coarse perception": 50.0, "fine-grained perception": 100.0, "math": 100.0}
    assert scores.l2_categories == {"image emotion": 50.0, "object counting": 100.0, "geometry": 100.0}
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["coarse perception: 50.00%", "  image emotion: 50.00%"]
    assert out[-1] == "Samples: 4, Final score: 75.00%"
    saved = json.loads(res.read_text())
    assert saved["score"] == 75.0 and saved["l2_categories"]["geometry"] == 100.0


def test_mmstar_categories_are_the_official_eighteen():
    assert len(eval_mmstar.CATEGORIES) == 6
    assert sum(len(l2s) for l2s in eval_mmstar.CATEGORIES.values()) == 18


def test_mmstar_unknown_category_pair_names_the_record(tmp_path, write_jsonl):
    q_file, answers = _mc_files(tmp_path, write_jsonl, "mmstar", ["A", "B", "C", "A"])
    lines = [json.loads(x) for x in q_file.read_text().splitlines()]
    lines[2]["l2_category"] = "geometry"  # a math l2 under fine-grained perception
    write_jsonl(q_file, lines)
    with pytest.raises(
        ValueError, match=r"q.jsonl: record 3: \('fine-grained perception', 'geometry'\) is not one"
    ):
        eval_mmstar.score_mmstar(lines, {}, str(q_file))


def test_mmstar_duplicated_answer_is_refused(tmp_path, write_jsonl):
    q_file, answers = _mc_files(tmp_path, write_jsonl, "mmstar", ["A", "B", "C", "A"])
    lines = [json.loads(x) for x in answers.read_text().splitlines()]
    write_jsonl(answers, [*lines, lines[3]])
    with pytest.raises(CoverageError, match=r"1 answered more than once \(e.g. '7' x2\)"):
        eval_mmstar.main(["--question-file", str(q_file), "--result-file", str(answers)])
