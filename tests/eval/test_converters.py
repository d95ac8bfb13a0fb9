"""Converter output formats: VQAv2 (every test question, missing -> ""), VizWiz, MM-Vet, MMBench."""

import csv
import json

import pytest

from llava.eval import converters
from llava.eval.scoring_io import CoverageError


def test_vqav2_covers_every_test_question(tmp_path, write_jsonl):
    root, split, ckpt = tmp_path / "vqav2", "llava_vqav2_mscoco_test-dev2015", "ckpt"
    write_jsonl(
        root / "llava_vqav2_mscoco_test2015.jsonl", [{"question_id": q, "text": "?"} for q in (1, 2, 3, 4)]
    )
    write_jsonl(root / f"{split}.jsonl", [{"question_id": q, "text": "?"} for q in (1, 2, 3)])  # test-dev
    merged = root / "answers" / split / ckpt / "merge.jsonl"
    write_jsonl(merged, [{"question_id": 3, "text": "Yes."}, {"question_id": 1, "text": "Two"}])
    with merged.open("a") as f:
        f.write('{"question_id": 2, "te\n')  # a truncated line from a killed chunk: skipped
    args = ["--dir", str(root), "--split", split, "--ckpt", ckpt]
    with pytest.raises(CoverageError, match=r"2 of 3 expected question\(s\) answered; 1 missing \(e.g. 2\)"):
        converters.vqav2_main(args)
    converters.vqav2_main([*args, "--allow-missing"])
    submission = json.loads((root / "answers_upload" / split / f"{ckpt}.json").read_text())
    # test-split order, answers through the EvalAI processor, question 2 unanswered -> "",
    # question 4 (test2015 but not test-dev) -> ""
    assert submission == [
        {"question_id": 1, "answer": "2"},
        {"question_id": 2, "answer": ""},
        {"question_id": 3, "answer": "yes"},
        {"question_id": 4, "answer": ""},
    ]
    write_jsonl(merged, [{"question_id": q, "text": "x"} for q in (1, 2, 3, 3)])
    with pytest.raises(CoverageError, match=r"1 answered more than once \(e.g. 3 x2\)"):
        converters.vqav2_main([*args, "--allow-missing"])


def test_vizwiz(tmp_path, write_jsonl):
    questions = [{"question_id": 0, "image": "VizWiz_test_00000000.jpg"}, {"question_id": 1, "image": "VizWiz_test_00000001.jpg"}]  # fmt: skip
    write_jsonl(tmp_path / "llava_test.jsonl", questions)
    write_jsonl(
        tmp_path / "answers.jsonl",
        [{"question_id": 1, "text": "A dog."}, {"question_id": 0, "text": "Unanswerable"}],
    )
    upload = tmp_path / "upload" / "ckpt.json"
    args = [
        "--annotation-file",
        str(tmp_path / "llava_test.jsonl"),
        "--result-file",
        str(tmp_path / "answers.jsonl"),
    ]
    converters.vizwiz_main([*args, "--result-upload-file", str(upload)])
    assert json.loads(upload.read_text()) == [
        {"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"},
        {"image": "VizWiz_test_00000001.jpg", "answer": "dog"},
    ]
    write_jsonl(tmp_path / "answers.jsonl", [{"question_id": 1, "text": "dog"}])
    with pytest.raises(CoverageError, match=r"1 of 2 expected question\(s\) answered; 1 missing \(e.g. 0\)"):
        converters.vizwiz_main([*args, "--result-upload-file", str(upload)])


def test_mmvet(tmp_path, write_jsonl):
    write_jsonl(
        tmp_path / "a.jsonl", [{"question_id": 0, "text": "A cat."}, {"question_id": 17, "text": "42"}]
    )
    args = ["--src", str(tmp_path / "a.jsonl"), "--dst", str(tmp_path / "r" / "ckpt.json")]
    converters.mmvet_main(args)
    assert json.loads((tmp_path / "r" / "ckpt.json").read_text()) == {"v1_0": "A cat.", "v1_17": "42"}
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": q, "text": "?"} for q in (0, 17, 18)])
    with pytest.raises(CoverageError, match=r"1 missing \(e.g. 18\)"):
        converters.mmvet_main([*args, "--question-file", str(questions)])
    write_jsonl(
        tmp_path / "a.jsonl", [{"question_id": 0, "text": "A cat."}, {"question_id": 0, "text": "A dog."}]
    )
    with pytest.raises(CoverageError, match=r"0 x2"):  # no question file: repeated ids still refused
        converters.mmvet_main(args)


EXPECTED_COLUMNS = ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]


def _run_mmbench(tmp_path, write_jsonl, tsv, *extra):
    write_jsonl(
        tmp_path / "answers" / "ckpt.jsonl",
        [{"question_id": 1_000_000, "text": "C"}, {"question_id": 0, "text": "A"}],
    )
    converters.mmbench_main(
        ["--annotation-file", str(tsv), "--result-dir", str(tmp_path / "answers"),
         "--upload-dir", str(tmp_path / "upload"), "--experiment", "ckpt", *extra]
    )  # fmt: skip


def test_mmbench_sheet_needs_every_row(tmp_path, write_jsonl, mmbench_tsv):
    with pytest.raises(CoverageError, match=r"2 of 9 expected question\(s\) answered; 7 missing"):
        _run_mmbench(tmp_path, write_jsonl, mmbench_tsv[0])


def test_mmbench_tsv_fallback(tmp_path, write_jsonl, monkeypatch, caplog, mmbench_tsv):
    monkeypatch.setattr(converters, "openpyxl_available", lambda: False)
    _run_mmbench(tmp_path, write_jsonl, mmbench_tsv[0], "--allow-missing")
    assert "openpyxl is not installed" in caplog.text
    with (tmp_path / "upload" / "ckpt.tsv").open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == EXPECTED_COLUMNS
    assert rows[1] == ["0", "Q?", "cat", "dog", "cow", "", "A", "A", "dev"]
    assert rows[2][6] == "C" and rows[4][6] == ""  # 1_000_000 answered, 1 not
    assert len(rows) == 1 + len(mmbench_tsv[1])


def test_mmbench_xlsx(tmp_path, write_jsonl, mmbench_tsv):
    openpyxl = pytest.importorskip("openpyxl")
    _run_mmbench(tmp_path, write_jsonl, mmbench_tsv[0], "--allow-missing")
    sheet = openpyxl.load_workbook(tmp_path / "upload" / "ckpt.xlsx").active
    values = list(sheet.iter_rows(values_only=True))
    assert list(values[0]) == EXPECTED_COLUMNS
    assert values[1][:7] == (0, "Q?", "cat", "dog", "cow", None, "A")
