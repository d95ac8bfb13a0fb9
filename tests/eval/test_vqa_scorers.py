"""TextVQA (VQA accuracy, matching by image and question) and GQA (exact match)."""

import json

import pytest

from llava.eval import eval_gqa, eval_textvqa
from llava.eval.converters import gqa_main
from llava.eval.scoring_io import CoverageError

SUFFIX = "\nAnswer the question using a single word or phrase."


def test_textvqa(tmp_path, write_json, write_jsonl, capsys):
    data = [
        {"image_id": "img1", "question": "What is written?", "answers": ["stop"] * 4 + ["STOP sign"] * 6},
        {"image_id": "img1", "question": "What color is it?", "answers": ["red"] * 10},
        {"image_id": "img2", "question": "Which brand?", "answers": ["Nike"] + ["adidas"] * 9},
    ]
    write_json(tmp_path / "val.json", {"data": data})
    results = [
        # "Stop." -> "stop": 4 of 10 GT answers match, every leave-one-out keeps >= 3: 1.0
        {
            "question_id": "img1",
            "prompt": "What is written?\nReference OCR token: STOP" + SUFFIX,
            "text": "Stop.",
        },
        # same image, other question: must pick the "red" annotation: 1.0
        {"question_id": "img1", "prompt": "What color is it?" + SUFFIX, "text": "Red"},
        # 1 match: 0.3
        {"question_id": "img2", "prompt": "WHICH brand?" + SUFFIX, "text": "nike"},
    ]
    write_jsonl(tmp_path / "answers.jsonl", results)
    accuracy = eval_textvqa.main(
        ["--annotation-file", str(tmp_path / "val.json"), "--result-file", str(tmp_path / "answers.jsonl")]
    )
    assert accuracy == pytest.approx(100 * (1.0 + 1.0 + 0.3) / 3)  # 76.67
    assert "Samples: 3\nAccuracy: 76.67%" in capsys.readouterr().out


def test_textvqa_unmatched_question_names_the_record(tmp_path, write_json, write_jsonl):
    write_json(tmp_path / "val.json", {"data": [{"image_id": "a", "question": "q?", "answers": ["x"] * 10}]})
    write_jsonl(tmp_path / "answers.jsonl", [{"question_id": "a", "prompt": "other?" + SUFFIX, "text": "x"}])
    with pytest.raises(
        CoverageError, match=r"1 missing \(e.g. \('a', 'q\?'\)\); 1 extra.*\('a', 'other\?'\)"
    ):
        eval_textvqa.main(
            [
                "--annotation-file",
                str(tmp_path / "val.json"),
                "--result-file",
                str(tmp_path / "answers.jsonl"),
            ]
        )


def test_gqa_convert_and_score(tmp_path, write_json, write_jsonl, capsys):
    questions = {
        "q1": {"answer": "yes", "isBalanced": True, "types": {"structural": "verify"}},
        "q2": {"answer": "table", "isBalanced": True, "types": {"structural": "query"}},
        "q3": {"answer": "left", "isBalanced": True, "types": {"structural": "choose"}},
        "q4": {"answer": "red", "isBalanced": False, "types": {"structural": "query"}},
    }
    write_json(tmp_path / "testdev_balanced_questions.json", questions)
    answers = [
        {"question_id": "q1", "text": "Yes."},  # -> "yes": right
        {"question_id": "q2", "text": "A table"},  # -> "a table": exact match fails
        {"question_id": "q3", "text": "left"},  # right
        {"question_id": "q4", "text": "blue"},  # unbalanced: not scored
    ]
    write_jsonl(tmp_path / "merge.jsonl", answers)
    dst = tmp_path / "testdev_balanced_predictions.json"
    gqa_main(["--src", str(tmp_path / "merge.jsonl"), "--dst", str(dst)])
    assert json.loads(dst.read_text())[:2] == [
        {"questionId": "q1", "prediction": "yes"},
        {"questionId": "q2", "prediction": "a table"},
    ]
    pattern = str(tmp_path / "{tier}")
    scores = eval_gqa.main(
        ["--questions", pattern + "_questions.json", "--predictions", pattern + "_predictions.json"]
    )
    # balanced: q1 right, q2 wrong, q3 right -> 2/3; binary (verify, choose) 2/2; open (query) 0/1
    assert scores.accuracy == pytest.approx(200 / 3)
    assert (scores.binary, scores.open, scores.count) == (100.0, 0.0, 3)
    assert capsys.readouterr().out.splitlines()[-1] == "Accuracy: 66.67%"


def test_gqa_coverage():
    questions = {"q1": {"answer": "yes"}, "q2": {"answer": "no"}, "q3": {"answer": "no", "isBalanced": False}}
    predictions = [{"questionId": "q1", "prediction": "yes"}, {"questionId": "q3", "prediction": "x"}]
    with pytest.raises(
        CoverageError, match=r"1 of 2 expected question\(s\) answered; 1 missing \(e.g. 'q2'\)"
    ):
        eval_gqa.index_predictions(predictions, questions, "preds.json")
    # opted in: only q1 is scored (q3, unbalanced, is ignored as GQA's eval.py ignores it)
    texts, coverage = eval_gqa.index_predictions(predictions, questions, "preds.json", allow_missing=True)
    assert eval_gqa.score_gqa(questions, texts).count == 1 and coverage.as_dict()["missing"] == 1
    extra = [*predictions, {"questionId": "q2", "prediction": "no"}, {"questionId": "q9", "prediction": "no"}]
    with pytest.raises(CoverageError, match=r"1 extra, not among the questions \(e.g. 'q9'\)"):
        eval_gqa.index_predictions(extra, questions, "preds.json")


def test_gqa_converter_checks_the_question_file(tmp_path, write_jsonl):
    write_jsonl(
        tmp_path / "q.jsonl", [{"question_id": "q1", "text": "?"}, {"question_id": "q2", "text": "?"}]
    )
    write_jsonl(tmp_path / "merge.jsonl", [{"question_id": "q1", "text": "yes"}])
    args = ["--src", str(tmp_path / "merge.jsonl"), "--dst", str(tmp_path / "p.json")]
    with pytest.raises(CoverageError, match=r"1 missing \(e.g. 'q2'\)"):
        gqa_main([*args, "--question-file", str(tmp_path / "q.jsonl")])
