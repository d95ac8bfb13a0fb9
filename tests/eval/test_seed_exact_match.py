"""SEED-Bench (per type / image / total, upload file) and the short-answer exact match."""

import json

import pytest

from llava.eval.converters import seed_main
from llava.eval.eval_exact_match import main as exact_match_main
from llava.eval.eval_exact_match import normalize_short_answer
from llava.eval.eval_seed import main as seed_score_main
from llava.eval.scoring_io import CoverageError

SEED = {
    "question_type": {"Scene Understanding": 1, "Instance Identity": 2},
    "questions": [
        {"question_id": "101", "answer": "A", "question_type_id": 1, "data_type": "image"},
        {"question_id": "102", "answer": "B", "question_type_id": 1, "data_type": "image"},
        {"question_id": "103", "answer": "C", "question_type_id": 2, "data_type": "image"},
        {"question_id": "v1", "answer": "D", "question_type_id": 2, "data_type": "video"},
    ],
}


def test_seed_scores_and_upload(tmp_path, write_json, write_jsonl, capsys):
    write_json(tmp_path / "SEED-Bench.json", SEED)
    answers = [
        {"question_id": 101, "text": "A"},  # int id matches "101": right
        {"question_id": "102", "text": "b"},  # exact comparison: wrong
        {"question_id": "103", "text": "C"},  # right
        {"question_id": "v1", "text": "A"},  # wrong
    ]
    write_jsonl(tmp_path / "merge.jsonl", answers)
    upload, res = tmp_path / "upload" / "ckpt.jsonl", tmp_path / "seed.json"
    seed_main(
        ["--annotation-file", str(tmp_path / "SEED-Bench.json"), "--result-file", str(tmp_path / "merge.jsonl"),
         "--result-upload-file", str(upload), "--results-json", str(res)]
    )  # fmt: skip
    out = capsys.readouterr().out
    # type 1: 1/2; type 2: 1/2; image 2/3; video 0/1; total 2/4
    for line in ("Scene Understanding: 50.00%", "Instance Identity: 50.00%", "Total accuracy: 50.00%",
                 "image accuracy: 66.67%", "video accuracy: 0.00%"):  # fmt: skip
        assert line in out
    lines = [json.loads(x) for x in upload.read_text().splitlines()]
    assert lines[0] == {"question_id": "101", "prediction": "A"} and len(lines) == 4
    saved = json.loads(res.read_text())
    assert saved["score"] == pytest.approx(200 / 3) and saved["total"] == 50.0


def test_seed_upload_needs_every_question(tmp_path, write_json, write_jsonl):
    write_json(tmp_path / "SEED-Bench.json", SEED)
    write_jsonl(tmp_path / "merge.jsonl", [{"question_id": "101", "text": "A"}])
    with pytest.raises(
        CoverageError, match=r"1 of 4 expected question\(s\) answered; 3 missing \(e.g. '102', '103', 'v1'\)"
    ):
        seed_main(["--annotation-file", str(tmp_path / "SEED-Bench.json"), "--result-file", str(tmp_path / "merge.jsonl"),
                   "--result-upload-file", str(tmp_path / "u.jsonl")])  # fmt: skip
    # The upload needs every question: the converter has no --allow-missing (it was accepted, then
    # the upload raised); the scorer has it and scores the answered question.
    with pytest.raises(SystemExit):
        seed_main(["--annotation-file", str(tmp_path / "SEED-Bench.json"), "--result-file", str(tmp_path / "merge.jsonl"),
                   "--result-upload-file", str(tmp_path / "u.jsonl"), "--allow-missing"])  # fmt: skip
    assert not (tmp_path / "u.jsonl").exists()
    assert seed_score_main(["--annotation-file", str(tmp_path / "SEED-Bench.json"), "--result-file",
                            str(tmp_path / "merge.jsonl"), "--allow-missing"]).total == 100.0  # fmt: skip


def test_seed_expected_questions_are_those_of_the_question_file(tmp_path, write_json, write_jsonl, capsys):
    """LLaVA's llava-seed-bench.jsonl and the SEED-Bench.json now served differ (LLaVA issue
    #1207): here the question file lacks the annotated "v1" and asks "104", which has no
    annotation."""
    annotation = write_json(tmp_path / "SEED-Bench.json", SEED)
    asked = ["101", "102", "103", "104"]
    questions = write_jsonl(tmp_path / "llava-seed-bench.jsonl", [{"question_id": int(q) , "image": "x.jpg", "text": "?"} for q in asked])  # fmt: skip
    answers = write_jsonl(tmp_path / "merge.jsonl", [{"question_id": int(q), "text": "A"} for q in asked])
    score = [
        "--annotation-file",
        str(annotation),
        "--result-file",
        str(answers),
        "--question-file",
        str(questions),
    ]
    res = tmp_path / "seed.json"
    scores = seed_score_main([*score, "--results-json", str(res)])
    out = capsys.readouterr().out
    assert scores.total == pytest.approx(100 / 3)  # 101 right, 102 and 103 wrong; 104 unscorable
    assert "NOTE: 1 question(s) of " in out and "SEED-Bench.json are not in " in out
    assert "llava-seed-bench.jsonl have no annotation in " in out and "INCOMPLETE" not in out
    saved = json.loads(res.read_text())
    assert (saved["annotated_not_asked"], saved["asked_not_annotated"]) == (1, 1)
    assert saved["coverage"]["expected"] == 4 and saved["coverage"]["missing"] == 0
    # An asked question without its answer is missing, though it has no annotation.
    write_jsonl(answers, [{"question_id": int(q), "text": "A"} for q in asked[:3]])
    with pytest.raises(
        CoverageError, match=r"3 of 4 expected question\(s\) answered; 1 missing \(e.g. '104'\)"
    ):
        seed_score_main(score)
    seed_score_main([*score, "--allow-missing", "--results-json", str(res)])
    assert json.loads(res.read_text())["partial"] == "3 of 4 questions"
    # The upload follows LLaVA's converter: a line per SEED-Bench.json question, none made up.
    upload = tmp_path / "u.jsonl"
    write_jsonl(answers, [{"question_id": int(q), "text": "A"} for q in asked])
    with pytest.raises(
        ValueError, match=r"1 of 4 question\(s\) of .*SEED-Bench.json have no answer \(e.g. \['v1'\]\)"
    ):
        seed_main([*score, "--result-upload-file", str(upload)])
    assert not upload.exists()
    every = [*asked[:3], "v1"]
    write_jsonl(questions, [{"question_id": q, "image": "x.jpg", "text": "?"} for q in every])
    write_jsonl(answers, [{"question_id": q, "text": "D"} for q in every])
    capsys.readouterr()
    seed_main([*score, "--result-upload-file", str(upload)])
    assert [json.loads(x)["question_id"] for x in upload.read_text().splitlines()] == [
        "101",
        "102",
        "103",
        "v1",
    ]
    assert "SEED-Bench upload: 4 prediction(s), 0 filled in" in capsys.readouterr().out


@pytest.mark.parametrize(("raw", "norm"), [(" Red. ", "red"), ("3.", "3"), ("3.5", "3.5"), ("Two", "two")])
def test_normalize_short_answer(raw, norm):
    assert normalize_short_answer(raw) == norm


def test_exact_match(tmp_path, write_jsonl):
    questions = [
        {"question_id": 1, "answer": "red", "category": "color"},
        {"question_id": 2, "answer": "3", "category": "count"},
        {"question_id": 3, "answer": "circle", "category": "count"},
        {"question_id": 4, "answer": "blue", "category": "color"},
    ]
    answers = [
        {"question_id": 1, "text": "Red."},  # right
        {"question_id": 2, "text": "3"},  # right
        {"question_id": 3, "text": "a circle"},  # wrong: no article removal here
    ]  # question 4 unanswered
    write_jsonl(tmp_path / "q.jsonl", questions)
    write_jsonl(tmp_path / "a.jsonl", answers)
    args = ["--question-file", str(tmp_path / "q.jsonl"), "--result-file", str(tmp_path / "a.jsonl")]
    with pytest.raises(
        CoverageError, match=r"3 of 4 expected question\(s\) answered; 1 missing \(e.g. '4'\)"
    ):
        exact_match_main(args)
    write_jsonl(tmp_path / "a.jsonl", [*answers, {"question_id": 4, "text": "Blue"}])
    scores = exact_match_main(args)
    assert scores.accuracy == 75.0 and scores.categories == {"color": 100.0, "count": 50.0}
    write_jsonl(tmp_path / "a.jsonl", answers)
    scores = exact_match_main([*args, "--allow-missing"])  # the 3 answered: 2 right
    assert scores.count == 3 and scores.accuracy == pytest.approx(200 / 3)
