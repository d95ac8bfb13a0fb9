"""MMBench: TSV reading (large base64 cells), letter parsing, circular grouping, coverage, and
`--all-rounds` answers scored and converted per round."""

import argparse
import csv
import json
import logging
import math

import pytest

from llava.eval import converters, model_vqa_mmbench, run_record
from llava.eval.eval_mmbench import PANDAS_NA_STRINGS, main, parse_choice, read_mmbench_tsv, row_options
from llava.eval.scoring_io import CoverageError

PREDICTIONS = {
    0: "A",
    1_000_000: "C. cat",
    2_000_000: "(B)",
    1: "B",
    1_000_001: "B",
    2: "D",
    1_000_002: "The answer is A",
    2_000_002: "A red car.",  # the option text itself -> B
    3_000_002: "A",  # wrong (C)
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


def test_missing_and_duplicated_predictions_are_errors(tmp_path, write_jsonl, mmbench_tsv):
    tsv, _ = mmbench_tsv
    answers = [{"question_id": k, "text": v} for k, v in PREDICTIONS.items()]
    path = tmp_path / "answers.jsonl"
    args = ["--annotation-file", str(tsv), "--result-file", str(path)]
    write_jsonl(path, answers[:-1])
    with pytest.raises(
        CoverageError, match=r"8 of 9 expected question\(s\) answered; 1 missing \(e.g. \(3000002, 0\)\)"
    ):
        main(args)
    # --allow-missing leaves out the question with an unanswered copy (base 2): 1 of 2 pass
    assert main([*args, "--allow-missing"]).circular == pytest.approx(50.0)
    write_jsonl(path, [*answers, answers[0]])
    with pytest.raises(CoverageError, match=r"1 answered more than once \(e.g. \(0, 0\) x2\)"):
        main(args)


# Base questions only (no rotated copies in the TSV): the runner's --all-rounds rotates them.
ROUND_ROWS = [
    {"index": "0", "answer": "A", "options": ["cat", "dog", "cow"], "category": "ocr"},
    {"index": "1", "answer": "B", "options": ["yes", "no"], "category": "logic"},
]


def _round_answers(wrong=()):
    """Answers as `model_vqa_mmbench --all-rounds` writes them (round r: options rotated left r
    times under A, B, ...), each naming the letter under which the right option was shown,
    except for the (index, round) pairs in `wrong`."""
    answers = []
    for row in ROUND_ROWS:
        letters = ["A", "B", "C", "D"][: len(row["options"])]
        right = row["options"][letters.index(row["answer"])]
        options, chars = list(row["options"]), list(letters)
        for round_id in range(len(letters)):
            shown = letters[options.index(right)]
            text = (
                letters[(letters.index(shown) + 1) % len(letters)]
                if (int(row["index"]), round_id) in wrong
                else shown
            )
            answers.append({"question_id": int(row["index"]), "round_id": round_id, "prompt": "...", "text": text,
                            "options": options, "option_char": chars})  # fmt: skip
            options, chars = options[1:] + options[:1], chars[1:] + chars[:1]
    return answers


@pytest.fixture
def rounds_tsv(tmp_path, mmbench_row, write_mmbench_tsv):
    rows = [mmbench_row(r["index"], r["answer"], r["options"], r["category"]) for r in ROUND_ROWS]
    return write_mmbench_tsv(tmp_path / "mmbench_dev_base.tsv", rows)


def _score_rounds(tmp_path, write_jsonl, tsv, answers):
    path = write_jsonl(tmp_path / "rounds.jsonl", answers)
    return main(["--annotation-file", str(tsv), "--result-file", str(path)])


def test_all_rounds_all_correct_score_100(tmp_path, write_jsonl, rounds_tsv):
    answers = _round_answers()
    # round 1 of question 0 shows "dog, cow, cat": the right option (cat) is under C
    assert [a["text"] for a in answers] == ["A", "C", "B", "B", "A"]
    scores = _score_rounds(tmp_path, write_jsonl, rounds_tsv, answers)
    assert (scores.circular, scores.vanilla, scores.num_questions) == (100.0, 100.0, 2)


def test_one_wrong_round_makes_its_question_wrong(tmp_path, write_jsonl, rounds_tsv):
    scores = _score_rounds(tmp_path, write_jsonl, rounds_tsv, _round_answers(wrong={(0, 2)}))
    assert scores.circular == 50.0 and scores.categories == {"logic": 100.0, "ocr": 0.0}
    assert scores.vanilla == 100.0  # round 0 of both questions is right


def test_all_rounds_coverage_and_rotation_checks(tmp_path, write_jsonl, rounds_tsv):
    answers = _round_answers()
    with pytest.raises(CoverageError, match=r"1 missing \(e.g. \(0, 2\)\)"):
        _score_rounds(tmp_path, write_jsonl, rounds_tsv, answers[:2] + answers[3:])
    answers[1]["options"] = ["cow", "cat", "dog"]  # not the TSV's round 1
    with pytest.raises(ValueError, match="question 0 round 1: options .* answers of another MMBench file"):
        _score_rounds(tmp_path, write_jsonl, rounds_tsv, answers)


def test_run_record_says_all_rounds_so_a_lost_round_is_missing(tmp_path, write_jsonl, rounds_tsv):
    # Only round 0 of every question survived, but the record says the run asked all rounds.
    answers = [a for a in _round_answers() if a["round_id"] == 0]
    path = write_jsonl(tmp_path / "rounds.jsonl", answers)
    record = {"format": run_record.FORMAT, "runner": run_record.MMBENCH_RUNNER, "prompt": {"all_rounds": True},
              "question_file": run_record.question_file_identity(rounds_tsv)}  # fmt: skip
    run_record.write_record(path, record)
    with pytest.raises(CoverageError, match=r"2 of 5 expected question\(s\) answered; 3 missing"):
        main(["--annotation-file", str(rounds_tsv), "--result-file", str(path)])


def test_all_rounds_submission_holds_round_0_only(tmp_path, write_jsonl, rounds_tsv, monkeypatch, caplog):
    """The server scores sheet rows by index against its own ground truth; it holds no rows for
    rotations a TSV without rotated copies lacks, so invented indices (index + k * 1,000,000)
    would not be scored as the rounds they are. The sheet holds round 0, and says so."""
    monkeypatch.setattr(converters, "openpyxl_available", lambda: False)
    write_jsonl(tmp_path / "answers" / "ckpt.jsonl", _round_answers(wrong={(1, 1)}))
    with caplog.at_level(logging.WARNING, logger="llava.eval.converters"):
        converters.mmbench_main(
            ["--annotation-file", str(rounds_tsv), "--result-dir", str(tmp_path / "answers"),
             "--upload-dir", str(tmp_path / "upload"), "--experiment", "ckpt"]
        )  # fmt: skip
    with (tmp_path / "upload" / "ckpt.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [(r["index"], r["A"], r["B"], r["C"], r["answer"], r["prediction"]) for r in rows] == [
        ("0", "cat", "dog", "cow", "A", "A"),
        ("1", "yes", "no", "", "B", "B"),
    ]
    assert "the upload sheet holds round 0 only" in caplog.text


# Cells LLaVA skips, as pandas reads them (NaN) or as its `is_none` sees them ("nan"/"none" in any case).
NA_ROWS = [  # (hint, A, B, C, D)
    ("None", "cat", "NA", "dog", ""),  # "NA" is NaN: one option, "dog" never shown
    ("N/A", "yes", "no", "N/A", ""),
    ("n/a", "1", " ", "null", ""),  # a cell of spaces is an option
    ("NULL", "x", "y", "NONE", "z"),  # "NONE": LLaVA's is_none, any case
    ("#N/A", "a", "b", "c", "d"),
    ("Look closely.", "x", "nAn", "b", ""),  # "nAn": is_none, any case
    ("", "a", "<NA>", "b", ""),
]


def _llava_prompts(tsv):
    """LLaVA's `model_vqa_mmbench` prompt text (`get_options`, `is_none`) on `pd.read_table`."""
    pd = pytest.importorskip("pandas")

    def is_none(value):
        return (
            value is None
            or (type(value) is float and math.isnan(value))
            or (type(value) is str and value.lower() in ("nan", "none"))
        )

    prompts = []
    for _, row in pd.read_table(tsv).iterrows():
        options = []
        for letter in "ABCD":
            if is_none(row[letter]):
                break
            options.append(row[letter])
        question = row["question"] if is_none(row["hint"]) else row["hint"] + "\n" + row["question"]
        prompts.append(
            question
            + "".join(f"\n{letter}. {option}" for letter, option in zip("ABCD", options, strict=False))
        )
    return prompts


def test_options_and_hints_are_skipped_as_llava_reads_them(tmp_path, mmbench_row, write_mmbench_tsv):
    pd = pytest.importorskip("pandas")
    assert frozenset(pd._libs.parsers.STR_NA_VALUES) == PANDAS_NA_STRINGS  # pandas' exact default list
    rows = []
    for i, (hint, *options) in enumerate(NA_ROWS):
        rows.append({**mmbench_row(i, "A", options, "ocr", question=f"Q{i}?"), "hint": hint})
    tsv = write_mmbench_tsv(tmp_path / "mmbench_na.tsv", rows)
    args = argparse.Namespace(question_file=str(tsv), lang="en", all_rounds=False, single_pred_prompt=False)
    ours = [model_vqa_mmbench.mmbench_samples(row, args)[0].prompt for row in read_mmbench_tsv(tsv)]
    llava = _llava_prompts(tsv)
    assert ours == llava
    assert (
        llava[0] == "Q0?\nA. cat" and llava[2] == "Q2?\nA. 1\nB.  " and llava[5] == "Look closely.\nQ5?\nA. x"
    )
    # the scorer and --all-rounds see the same options: one round per option shown
    assert [len(row_options(row)) for row in read_mmbench_tsv(tsv)] == [1, 2, 2, 2, 4, 1, 1]
    args.all_rounds = True
    rounds = [len(model_vqa_mmbench.mmbench_samples(row, args)) for row in read_mmbench_tsv(tsv)]
    assert rounds == [1, 2, 2, 2, 4, 1, 1]
