"""Converters from runner answers (jsonl) to the files each benchmark's evaluator or server wants.

Formats follow https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md; the scripts in
`scripts/convert_*.py` call the `*_main` functions here, with LLaVA's flag names.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llava.eval.answer_processor import normalize_answer
from llava.eval.eval_mmbench import read_mmbench_tsv
from llava.eval.eval_seed import index_predictions, print_scores, score_seed, write_seed_results
from llava.eval.scoring_io import field, read_json, read_jsonl, write_json, write_jsonl

logger = logging.getLogger(__name__)

Record = Mapping[str, Any]


def _answers_by_id(results: Sequence[Record], source: str) -> dict[Any, str]:
    return {
        field(r, "question_id", f"{source}: record {i}"): str(field(r, "text", f"{source}: record {i}"))
        for i, r in enumerate(results, start=1)
    }


# --- GQA -------------------------------------------------------------------------------------


def gqa_predictions(results: Sequence[Record], source: str = "answers") -> list[dict[str, str]]:
    """`[{"questionId", "prediction"}]`, the prediction lower-cased without trailing periods."""
    return [
        {"questionId": qid, "prediction": text.rstrip(".").lower()}
        for qid, text in _answers_by_id(results, source).items()
    ]


def gqa_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Answers jsonl -> GQA testdev_balanced_predictions.json")
    parser.add_argument("--src", required=True, help="merged answers jsonl")
    parser.add_argument("--dst", required=True, help="testdev_balanced_predictions.json")
    args = parser.parse_args(argv)
    predictions = gqa_predictions(read_jsonl(args.src), args.src)
    write_json(args.dst, predictions)
    logger.info("wrote %d GQA predictions to %s", len(predictions), args.dst)


# --- VQAv2 -----------------------------------------------------------------------------------


def vqav2_submission(results: Sequence[Record], test_questions: Sequence[Record]) -> list[dict[str, Any]]:
    """One entry per test2015 question, in its order; questions without an answer get ""."""
    answers = _answers_by_id(results, "answers")
    submission = []
    for i, question in enumerate(test_questions, start=1):
        qid = field(question, "question_id", f"test split: record {i}")
        submission.append(
            {"question_id": qid, "answer": normalize_answer(answers[qid]) if qid in answers else ""}
        )
    return submission


def vqav2_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Merged VQAv2 answers -> EvalAI submission JSON")
    parser.add_argument("--dir", default="./playground/data/eval/vqav2")
    parser.add_argument("--ckpt", required=True, help="checkpoint name (answers/<split>/<ckpt>/merge.jsonl)")
    parser.add_argument("--split", required=True, help="e.g. llava_vqav2_mscoco_test-dev2015")
    parser.add_argument("--test-split", default="llava_vqav2_mscoco_test2015.jsonl", help="relative to --dir")
    args = parser.parse_args(argv)
    root = Path(args.dir)
    src = root / "answers" / args.split / args.ckpt / "merge.jsonl"
    dst = root / "answers_upload" / args.split / f"{args.ckpt}.json"
    results = read_jsonl(src, skip_bad_lines=True)
    test_questions = read_jsonl(root / args.test_split)
    submission = vqav2_submission(results, test_questions)
    answered = {r["question_id"] for r in results}
    missing = sum(entry["question_id"] not in answered for entry in submission)
    print(f"total results: {len(results)}, total split: {len(test_questions)}, unanswered: {missing}")
    write_json(dst, submission)
    logger.info("wrote %s (%d questions)", dst, len(submission))


# --- VizWiz ----------------------------------------------------------------------------------


def vizwiz_submission(results: Sequence[Record], questions: Sequence[Record]) -> list[dict[str, str]]:
    """`[{"image", "answer"}]` for every test question; a question without an answer raises."""
    answers = _answers_by_id(results, "answers")
    submission = []
    for i, question in enumerate(questions, start=1):
        where = f"VizWiz questions: record {i}"
        qid = field(question, "question_id", where)
        if qid not in answers:
            raise ValueError(f"{where}: no answer for question_id {qid!r}; the server needs every question")
        submission.append(
            {"image": field(question, "image", where), "answer": normalize_answer(answers[qid])}
        )
    return submission


def vizwiz_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="VizWiz answers -> EvalAI submission JSON")
    parser.add_argument("--annotation-file", required=True, help="llava_test.jsonl")
    parser.add_argument("--result-file", required=True)
    parser.add_argument("--result-upload-file", required=True)
    args = parser.parse_args(argv)
    results, questions = read_jsonl(args.result_file), read_jsonl(args.annotation_file)
    print(f"total results: {len(results)}, total split: {len(questions)}")
    write_json(args.result_upload_file, vizwiz_submission(results, questions))


# --- MMBench ---------------------------------------------------------------------------------

MMBENCH_DROPPED_COLUMNS = frozenset({"hint", "category", "source", "image", "comment", "l2-category"})


def mmbench_submission(
    rows: Sequence[Mapping[str, str]], results: Sequence[Record]
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the upload sheet: the TSV's columns without hint, category, source,
    image, comment and l2-category, and `prediction` inserted after D. Rows keep TSV order."""
    answers = {int(qid): text for qid, text in _answers_by_id(results, "answers").items()}
    columns = [name for name in rows[0] if name not in MMBENCH_DROPPED_COLUMNS]
    columns.insert(columns.index("D") + 1 if "D" in columns else len(columns), "prediction")
    missing = 0
    table = []
    for row in rows:
        index = int(row["index"])
        missing += index not in answers
        values = {**row, "index": index, "prediction": answers.get(index)}
        table.append([values[name] if values[name] != "" else None for name in columns])
    if missing:
        logger.warning("MMBench: %d of %d rows have no prediction (left empty)", missing, len(rows))
    return columns, table


def openpyxl_available() -> bool:
    return importlib.util.find_spec("openpyxl") is not None


def write_sheet(columns: list[str], table: list[list[Any]], stem: Path) -> Path:
    """`<stem>.xlsx` with openpyxl when installed, else `<stem>.tsv` (and a warning)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    if openpyxl_available():
        from openpyxl import Workbook

        workbook = Workbook()
        sheet = workbook.active
        sheet.append(columns)
        for values in table:
            sheet.append(values)
        path = stem.with_suffix(".xlsx")
        workbook.save(path)
        return path
    path = stem.with_suffix(".tsv")
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in values] for values in table])
    logger.warning(
        "openpyxl is not installed, so %s was written as TSV; the MMBench server wants xlsx: "
        "`pip install openpyxl` (or the package's `eval` extra) and convert again",
        path,
    )
    return path


def mmbench_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MMBench answers -> upload sheet (xlsx)")
    parser.add_argument("--annotation-file", required=True, help="the split's TSV")
    parser.add_argument("--result-dir", required=True, help="folder with <experiment>.jsonl")
    parser.add_argument("--upload-dir", required=True)
    parser.add_argument("--experiment", required=True)
    args = parser.parse_args(argv)
    results = read_jsonl(Path(args.result_dir) / f"{args.experiment}.jsonl")
    columns, table = mmbench_submission(read_mmbench_tsv(args.annotation_file), results)
    path = write_sheet(columns, table, Path(args.upload_dir) / args.experiment)
    logger.info("wrote %s (%d rows)", path, len(table))


# --- MM-Vet ----------------------------------------------------------------------------------


def mmvet_results(results: Sequence[Record], source: str = "answers") -> dict[str, str]:
    """`{"v1_<qid>": text}`, the input of MM-Vet's GPT-4 grader."""
    return {f"v1_{qid}": text for qid, text in _answers_by_id(results, source).items()}


def mmvet_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MM-Vet answers -> grader JSON")
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    args = parser.parse_args(argv)
    write_json(args.dst, mmvet_results(read_jsonl(args.src), args.src), indent=2)


# --- SEED-Bench ------------------------------------------------------------------------------


def seed_submission(annotation: Mapping[str, Any], predictions: Mapping[str, str]) -> list[dict[str, Any]]:
    """`{"question_id", "prediction"}` per SEED-Bench question, in the annotation's order."""
    lines = []
    for i, question in enumerate(field(annotation, "questions", "SEED-Bench.json")):
        qid = field(question, "question_id", f"SEED-Bench.json: questions[{i}]")
        if str(qid) not in predictions:
            raise ValueError(
                f"SEED-Bench: no prediction for question_id {qid!r}; the upload needs all of them"
            )
        lines.append({"question_id": qid, "prediction": predictions[str(qid)]})
    return lines


def seed_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SEED-Bench answers -> scores and upload jsonl")
    parser.add_argument("--annotation-file", required=True, help="SEED-Bench.json")
    parser.add_argument("--result-file", required=True)
    parser.add_argument("--result-upload-file", required=True)
    parser.add_argument("--results-json", default=None, help="headline numbers for llava.eval.report")
    args = parser.parse_args(argv)
    annotation = read_json(args.annotation_file)
    predictions = index_predictions(read_jsonl(args.result_file), args.result_file)
    scores = score_seed(annotation, predictions, args.annotation_file)
    print_scores(scores)
    write_seed_results(args.results_json, scores)
    write_jsonl(args.result_upload_file, seed_submission(annotation, predictions))
