"""MMBench: TSV reading (large base64 cells), letter parsing, circular grouping."""

import csv
import json

import pytest

from llava.eval.eval_mmbench import main, parse_choice, read_mmbench_tsv

PREDICTIONS = {
    0: "A",
    1_000_000: "C. cat",
    2_000_000: "(B)",
    1: "B",
    1_000_001: "B",
    2: "D",
    1_000_002: "The answer is A",
    2_000_002: "A red car.",  # the option text itself -> B
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("B.", "B"),
        ("(C)", "C"),
        ("C: cow", "C"),
        ("D", None),  # this row has only A-C
        ("A dog", None),  # a sentence starting with the article "A" is not a choice
        ("dog", "B"),  # option text
        ("I believe the answer is C", "C"),
        ("", None),
    ],
)
def test_parse_choice(text, expected, mmbench_row):
    assert parse_choice(text, mmbench_row(5, "A", ["cat", "dog", "cow"], "x")) == expected


def test_circular_scoring(tmp_path, write_jsonl, capsys, mmbench_tsv):
    tsv, _ = mmbench_tsv
    assert len(read_mmbench_tsv(tsv)[0]["image"]) > 131_072  # above csv's default field limit
    write_jsonl(tmp_path / "answers.jsonl", [{"question_id": k, "text": v} for k, v in PREDICTIONS.items()])
    res = tmp_path / "mmbench.json"
    scores = main(
        [
            "--annotation-file",
            str(tsv),
            "--result-file",
            str(tmp_path / "answers.jsonl"),
            "--results-json",
            str(res),
        ]
    )
    # groups: base 0 passes, base 1 and base 2 fail -> 1/3; ocr 1/2, logic 0/1
    assert scores.circular == pytest.approx(100 / 3)
    assert scores.categories == {"logic": 0.0, "ocr": 50.0}
    assert scores.vanilla == 100.0  # rows 0, 1, 2 alone are all right
    assert scores.num_questions == 3
    assert "Circular accuracy: 33.33%" in capsys.readouterr().out
    assert json.loads(res.read_text())["score"] == pytest.approx(100 / 3)


def test_test_split_without_answers_is_refused(tmp_path, write_jsonl, mmbench_tsv):
    rows = [{k: v for k, v in r.items() if k != "answer"} for r in mmbench_tsv[1][:1]]
    tsv = tmp_path / "test.tsv"
    with tsv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": 0, "text": "A"}])
    with pytest.raises(ValueError, match="no 'answer' column"):
        main(["--annotation-file", str(tsv), "--result-file", str(tmp_path / "a.jsonl")])
