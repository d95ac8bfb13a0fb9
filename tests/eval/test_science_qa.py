"""ScienceQA scorer: parsing order, FAILED, letters outside the options, IMG subset, outputs."""

import json

import pytest

from llava.eval.eval_science_qa import FAILED, main, option_index, parse_letter
from llava.eval.scoring_io import CoverageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),  # exact letter
        ("B. Paris", "B"),  # "X. " prefix
        ("B.Paris", FAILED),  # no space after the period
        ("I think so. The answer is C.", "C"),  # one "The answer is X." match
        ("The answer is C, surely", "C"),  # the final "." of the pattern is a wildcard
        ("The answer is A. The answer is B.", FAILED),  # two matches
        ("b", FAILED),  # lower case is not a letter option
        ("F", FAILED),  # not among A-E
        ("", FAILED),
    ],
)
def test_parse_letter(text, expected):
    assert parse_letter(text) == expected


def test_option_index_rejects_letters_beyond_the_choices():
    assert option_index("B", 2) == 1
    assert option_index("C", 2) == -1
    assert option_index(FAILED, 4) == -1


def _problem(n_choices, answer):
    return {"choices": [f"c{i}" for i in range(n_choices)], "answer": answer, "split": "test"}


def test_main_scores_and_writes_outputs(tmp_path, write_json, write_jsonl, capsys):
    problems = {
        "1": _problem(3, 0),  # "A"                      -> right (image)
        "2": _problem(2, 1),  # "B. yes"                 -> right
        "3": _problem(4, 2),  # "... The answer is C."   -> right (image)
        "4": _problem(2, 0),  # two "The answer is"      -> FAILED (image)
        "5": _problem(2, 0),  # "C" with 2 choices       -> wrong (image)
        "6": _problem(3, 1),  # "A", text only           -> wrong
        "7": _problem(2, 0),  # "a"                      -> FAILED
        "8": _problem(2, 0),  # train split: an answer to it is refused
    }
    write_json(tmp_path / "problems.json", problems)
    write_json(tmp_path / "pid_splits.json", {"test": [str(i) for i in range(1, 8)], "train": ["8"]})
    img, txt = "<image>\nQuestion?\nA. x\nB. y", "Question?\nA. x\nB. y"
    preds = [
        {"question_id": "1", "prompt": img, "text": "A"},
        {"question_id": "2", "prompt": txt, "text": "B. yes"},
        {"question_id": "3", "prompt": img, "text": "Hmm. The answer is C."},
        {"question_id": "4", "prompt": img, "text": "The answer is A. The answer is B."},
        {"question_id": "5", "prompt": img, "text": "C"},
        {"question_id": "6", "prompt": txt, "text": "A"},
        {"question_id": "7", "prompt": txt, "text": "a"},
    ]
    write_jsonl(tmp_path / "answers.jsonl", preds)
    out_file, out_result = tmp_path / "out.json", tmp_path / "result.json"
    main(
        [
            "--base-dir", str(tmp_path), "--result-file", str(tmp_path / "answers.jsonl"),
            "--output-file", str(out_file), "--output-result", str(out_result),
            "--results-json", str(tmp_path / "res" / "sqa.json"),
        ]
    )  # fmt: skip
    # 3 of 7 right = 42.86%; image questions 1, 3, 4, 5, 2 right = 50.00%
    assert capsys.readouterr().out.strip() == "Total: 7, Correct: 3, Accuracy: 42.86%, IMG-Accuracy: 50.00%"

    analysis = json.loads(out_file.read_text())
    assert [a["question_id"] for a in analysis["correct"]] == ["1", "2", "3"]
    incorrect = {a["question_id"]: a for a in analysis["incorrect"]}
    assert {k: v["parsed_ans"] for k, v in incorrect.items()} == {
        "4": FAILED,
        "5": "C",
        "6": "A",
        "7": FAILED,
    }
    assert incorrect["6"]["question"] == txt and incorrect["6"]["is_multimodal"] is False
    assert incorrect["5"]["ground_truth"] == "A" and incorrect["5"]["pred"] == "C"

    result = json.loads(out_result.read_text())
    assert result["acc"] == pytest.approx(300 / 7)
    assert (result["correct"], result["count"]) == (3, 7)
    assert result["results"] == {"1": 0, "2": 1, "3": 2, "4": -1, "5": -1, "6": 0, "7": -1}
    assert result["outputs"]["6"] == "A" and result["outputs"]["2"] == "B. yes"
    headline = json.loads((tmp_path / "res" / "sqa.json").read_text())
    assert headline["score"] == pytest.approx(50.0) and headline["benchmark"] == "sqa"


def test_every_problem_of_the_split_answered_once(tmp_path, write_json, write_jsonl, capsys):
    write_json(tmp_path / "problems.json", {str(i): _problem(2, 0) for i in range(1, 4)})
    write_json(tmp_path / "pid_splits.json", {"test": ["1", "2"], "train": ["3"]})
    answers = tmp_path / "answers.jsonl"
    args = ["--base-dir", str(tmp_path), "--result-file", str(answers)]
    pred = {"prompt": "Q?\nA. x\nB. y", "text": "A"}
    write_jsonl(answers, [{"question_id": "1", **pred}])
    with pytest.raises(
        CoverageError, match=r"1 of 2 expected question\(s\) answered; 1 missing \(e.g. '2'\)"
    ):
        main(args)
    result = main([*args, "--allow-missing"])  # scored on the answered problem only
    assert (result.total, result.accuracy) == (1, 100.0)
    assert "INCOMPLETE: " in capsys.readouterr().out
    write_jsonl(answers, [{"question_id": q, **pred} for q in ("1", "2", "3")])
    with pytest.raises(CoverageError, match=r"1 extra, not among the questions \(e.g. '3'\)"):
        main(args)
