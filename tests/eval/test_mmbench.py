"""MMBench: TSV reading (large base64 cells), letter parsing, circular grouping."""

import csv
import json

import pytest

from llava.eval.eval_mmbench import main, parse_choice, read_mmbench_tsv

COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source", "l2-category", "comment", "split"]  # fmt: skip
BIG_IMAGE = "iVBOR" + "A" * 200_000  # above csv's default 128 KiB field limit


def row(index, answer, options, category, question="Q?"):
    opts = list(options) + [""] * (4 - len(options))
    values = [index, question, "", *opts, answer, category, BIG_IMAGE, "src", "l2", "", "dev"]
    return dict(zip(COLUMNS, map(str, values), strict=True))


def write_tsv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return path


ROWS = [
    # base 0 (ocr, 3 options): every rotated copy answered right -> passes
    row(0, "A", ["cat", "dog", "cow"], "ocr"),
    row(1_000_000, "C", ["dog", "cow", "cat"], "ocr"),
    row(2_000_000, "B", ["cow", "cat", "dog"], "ocr"),
    # base 1 (ocr, 2 options): the copy is wrong -> fails
    row(1, "B", ["yes", "no"], "ocr"),
    row(1_000_001, "A", ["no", "yes"], "ocr"),
    # base 2 (logic, 4 options): one copy has no prediction -> fails
    row(2, "D", ["1", "2", "3", "a red car"], "logic"),
    row(1_000_002, "A", ["a red car", "1", "2", "3"], "logic"),
    row(2_000_002, "B", ["3", "a red car", "1", "2"], "logic"),
    row(3_000_002, "C", ["2", "3", "a red car", "1"], "logic"),
]
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
def test_parse_choice(text, expected):
    assert parse_choice(text, row(5, "A", ["cat", "dog", "cow"], "x")) == expected


def test_circular_scoring(tmp_path, write_jsonl, capsys):
    tsv = write_tsv(tmp_path / "mmbench_dev.tsv", ROWS)
    assert len(read_mmbench_tsv(tsv)[0]["image"]) == len(BIG_IMAGE)
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


def test_test_split_without_answers_is_refused(tmp_path, write_jsonl):
    rows = [{k: v for k, v in r.items() if k != "answer"} for r in ROWS[:1]]
    tsv = tmp_path / "test.tsv"
    with tsv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": 0, "text": "A"}])
    with pytest.raises(ValueError, match="no 'answer' column"):
        main(["--annotation-file", str(tsv), "--result-file", str(tmp_path / "a.jsonl")])
