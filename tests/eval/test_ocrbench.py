"""OCRBench: the official substring rule (the HME100k case included), the five groups and the
final score worked out by hand, coverage, and answers to another OCRBench.json refused."""

import json

import pytest

from llava.eval import eval_ocrbench
from llava.eval.scoring_io import CoverageError
from tests.eval.benchmark_files import OCRBENCH_RECORDS, write_json, write_ocrbench

# Per record of OCRBENCH_RECORDS: an answer and whether the official rule counts it right.
ANSWERS = [
    ("The word is centre.", True),  # "CENTRE" lower-cased is inside
    ("richtungs angabe", False),  # a space breaks the substring
    ("JOINT", True),
    ("tesco\nexpress", True),  # the list's second answer, the newline made a space
    ("12/04/98", False),
    ("Name: John Smith\nDate: 1999", True),
    ("x_{1}=0", True),  # HME100k: every space removed from both: "x_{1}=0" is inside
    ("M>\\frac{2}{3}", False),  # HME100k keeps the case: "m>..." is not inside "M>..."
]


def answer_lines(texts):
    return [
        {"question_id": i, "prompt": record["question"], "text": text}
        for i, (record, text) in enumerate(zip(OCRBENCH_RECORDS, texts, strict=True))
    ]


@pytest.mark.parametrize(("index", "expected"), [(i, right) for i, (_, right) in enumerate(ANSWERS)])
def test_official_matching_rule(index, expected):
    record = OCRBENCH_RECORDS[index]
    assert eval_ocrbench.is_match(ANSWERS[index][0], record["answers"], record["dataset_name"]) is expected


def test_matching_edge_cases():
    # Outside HME100k, case and surrounding spaces do not matter; inside, spaces are removed.
    assert eval_ocrbench.is_match("  HELLO world ", "hello", "IIIT5K")
    assert not eval_ocrbench.is_match("hel lo", "hello", "IIIT5K")
    assert eval_ocrbench.is_match("\\frac{1}{2}", "\\frac { 1 } { 2 }\n", "HME100k")
    # The official rule folds no fullwidth characters (lmms-eval's variant does).
    assert not eval_ocrbench.is_match("ＡＢＣ", "abc", "IIIT5K")
    # An empty answer is wrong unless a ground truth is empty.
    assert not eval_ocrbench.is_match("", "CENTRE", "IIIT5K")


def test_scores_by_type_group_and_total(tmp_path, write_jsonl, capsys):
    annotation = write_ocrbench(tmp_path)
    write_jsonl(tmp_path / "answers.jsonl", answer_lines([text for text, _ in ANSWERS]))
    res = tmp_path / "ocrbench.json"
    scores = eval_ocrbench.main(
        ["--annotation-file", str(annotation), "--result-file", str(tmp_path / "answers.jsonl"),
         "--results-json", str(res)]
    )  # fmt: skip
    # Regular 1 of 2, Irregular 1 of 1 -> recognition 2 of 3; scene 1 of 1; doc 0 of 1; KIE 1 of 1;
    # HMER 1 of 2; final 2 + 1 + 0 + 1 + 1 = 5 of 8.
    assert scores.types["Regular Text Recognition"] == 1 and scores.types["Irregular Text Recognition"] == 1
    assert scores.groups == {
        "Text Recognition": 2,
        "Scene Text-centric VQA": 1,
        "Doc-oriented VQA": 0,
        "Key Information Extraction": 1,
        "Handwritten Mathematical Expression Recognition": 1,
    }
    assert (scores.final, scores.count) == (5, 8)
    assert scores.datasets == {"IIIT5K": 100.0, "IC13_857": 0.0, "IC15_1811": 100.0, "STVQA": 100.0,
                               "docVQA": 0.0, "FUNSD": 100.0, "HME100k": 50.0}  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        "Text Recognition (of 3): 2",
        "  Regular Text Recognition (of 2): 1",
        "  Irregular Text Recognition (of 1): 1",
    ]
    assert "  Artistic Text Recognition (of 0): 0" in out
    assert out[-1] == "Final Score (of 8): 5"
    saved = json.loads(res.read_text())
    assert saved["score"] == 5 and saved["partial"] is None and saved["coverage"]["answered"] == 8


def test_coverage_errors_name_the_file_and_id(tmp_path, write_jsonl):
    annotation = write_ocrbench(tmp_path)
    lines = answer_lines([text for text, _ in ANSWERS])
    args = ["--annotation-file", str(annotation), "--result-file", str(tmp_path / "a.jsonl")]
    write_jsonl(tmp_path / "a.jsonl", lines[:7])
    with pytest.raises(
        CoverageError, match=r"a.jsonl: 7 of 8 expected question\(s\) answered; 1 missing \(e.g. 7\)"
    ):
        eval_ocrbench.main(args)
    write_jsonl(tmp_path / "a.jsonl", [*lines, {**lines[2], "question_id": 8}])
    with pytest.raises(CoverageError, match=r"1 extra, not among the questions \(e.g. 8\)"):
        eval_ocrbench.main(args)
    write_jsonl(tmp_path / "a.jsonl", [*lines, lines[2]])
    with pytest.raises(CoverageError, match=r"1 answered more than once \(e.g. 2 x2\)"):
        eval_ocrbench.main(args)
    # Opted in: the 7 answered ones are scored, and the score says it is partial.
    write_jsonl(tmp_path / "a.jsonl", lines[:7])
    res = tmp_path / "r.json"
    scores = eval_ocrbench.main([*args, "--allow-missing", "--results-json", str(res)])
    assert (scores.final, scores.count) == (5, 7)
    assert json.loads(res.read_text())["partial"] == "7 of 8 questions"


def test_answers_to_another_ocrbench_json_are_refused(tmp_path, write_jsonl):
    annotation = write_ocrbench(tmp_path)
    lines = answer_lines([text for text, _ in ANSWERS])
    lines[3]["prompt"] = "what is written in the image?"
    write_jsonl(tmp_path / "a.jsonl", lines)
    with pytest.raises(
        ValueError,
        match=r"question 3 was asked 'what is written in the image\?', but .*OCRBench.json\[3\] asks",
    ):
        eval_ocrbench.main(["--annotation-file", str(annotation), "--result-file", str(tmp_path / "a.jsonl")])


def test_unknown_type_is_named(tmp_path):
    records = [dict(r) for r in OCRBENCH_RECORDS]
    records[4]["type"] = "Doc VQA"
    write_json(tmp_path / "OCRBench.json", records)
    with pytest.raises(ValueError, match=r"OCRBench.json\[4\]: unknown type 'Doc VQA'"):
        eval_ocrbench.read_records(records, str(tmp_path / "OCRBench.json"))
    records[4]["type"], records[5]["answers"] = "Doc-oriented VQA", 7
    with pytest.raises(ValueError, match=r"OCRBench.json\[5\]: answers should be a text or a list of texts"):
        eval_ocrbench.read_records(records, "OCRBench.json")
