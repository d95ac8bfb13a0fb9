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
from llava.eval.eval_mmbench import (
    CIRCULAR_STRIDE,
    is_all_rounds,
    match_rounds,
    read_mmbench_tsv,
)
from llava.eval.eval_seed import add_seed_arguments, score_seed_file
from llava.eval.run_record import FREEFORM_RUNNER, LOADER_RUNNER, MMBENCH_RUNNER, check_question_file
from llava.eval.scoring_io import (
    Coverage,
    add_coverage_argument,
    field,
    index_answers,
    read_jsonl,
    write_json,
    write_jsonl,
)

logger = logging.getLogger(__name__)

Record = Mapping[str, Any]


def _question_id(record: Record, where: str) -> Any:
    return field(record, "question_id", where)


def _answer_texts(
    results: Sequence[Record],
    source: str,
    expected: Sequence[Any] | None = None,
    allow_missing: bool = False,
) -> tuple[dict[Any, str], Coverage]:
    """`{question_id: text}` after the coverage check against the `expected` ids; without
    `expected` (no question file given) only repeated ids are refused."""
    keys = [_question_id(r, f"{source}: record {i}") for i, r in enumerate(results, start=1)]
    wanted = list(dict.fromkeys(keys)) if expected is None else expected
    by_id, coverage = index_answers(results, _question_id, wanted, source, allow_missing=allow_missing)
    texts = {qid: str(field(r, "text", f"{source}: question {qid!r}")) for qid, r in by_id.items()}
    return texts, coverage


def _question_ids(path: str | Path, runner: str, answers_file: str | Path) -> list[Any]:
    """The ids of a question file, after checking that `answers_file` was made from it."""
    check_question_file(answers_file, path, runners=(runner,))
    return [_question_id(q, f"{path}: record {i}") for i, q in enumerate(read_jsonl(path), start=1)]


def _add_question_file_argument(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--question-file",
        default=None,
        help=f"{name}: check that every question is answered once and that the answers were made from it",
    )


# --- GQA -------------------------------------------------------------------------------------


def gqa_predictions(
    results: Sequence[Record],
    source: str = "answers",
    expected: Sequence[Any] | None = None,
    allow_missing: bool = False,
) -> list[dict[str, str]]:
    """`[{"questionId", "prediction"}]`, the prediction lower-cased without trailing periods."""
    texts, _ = _answer_texts(results, source, expected, allow_missing)
    return [{"questionId": qid, "prediction": text.rstrip(".").lower()} for qid, text in texts.items()]


def gqa_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Answers jsonl -> GQA testdev_balanced_predictions.json")
    parser.add_argument("--src", required=True, help="merged answers jsonl")
    parser.add_argument("--dst", required=True, help="testdev_balanced_predictions.json")
    _add_question_file_argument(parser, "llava_gqa_testdev_balanced.jsonl")
    add_coverage_argument(parser)
    args = parser.parse_args(argv)
    expected = _question_ids(args.question_file, LOADER_RUNNER, args.src) if args.question_file else None
    predictions = gqa_predictions(read_jsonl(args.src), args.src, expected, args.allow_missing)
    write_json(args.dst, predictions)
    logger.info("wrote %d GQA predictions to %s", len(predictions), args.dst)


# --- VQAv2 -----------------------------------------------------------------------------------


def vqav2_submission(
    results: Sequence[Record],
    test_questions: Sequence[Record],
    expected: Sequence[Any],
    source: str = "answers",
    allow_missing: bool = False,
) -> list[dict[str, Any]]:
    """One entry per test2015 question, in its order. Every `expected` (test-dev) question needs
    one answer (with `allow_missing`, unanswered ones get "" as LLaVA's converter writes)."""
    answers, _ = _answer_texts(results, source, expected, allow_missing)
    submission = []
    for i, question in enumerate(test_questions, start=1):
        qid = field(question, "question_id", f"test split: record {i}")
        submission.append(
            {"question_id": qid, "answer": normalize_answer(answers[qid]) if qid in answers else ""}
        )
    outside = set(answers) - {entry["question_id"] for entry in submission}
    if outside:
        raise ValueError(
            f"{source}: {len(outside)} answered question(s) not in the test split, e.g. {sorted(outside, key=str)[:5]}"
        )
    return submission


def vqav2_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Merged VQAv2 answers -> EvalAI submission JSON")
    parser.add_argument("--dir", default="./playground/data/eval/vqav2")
    parser.add_argument("--ckpt", required=True, help="checkpoint name (answers/<split>/<ckpt>/merge.jsonl)")
    parser.add_argument("--split", required=True, help="e.g. llava_vqav2_mscoco_test-dev2015")
    parser.add_argument("--test-split", default="llava_vqav2_mscoco_test2015.jsonl", help="relative to --dir")
    parser.add_argument(
        "--question-file", default=None, help="the answered questions (default: <dir>/<split>.jsonl)"
    )
    add_coverage_argument(parser)
    args = parser.parse_args(argv)
    root = Path(args.dir)
    src = root / "answers" / args.split / args.ckpt / "merge.jsonl"
    dst = root / "answers_upload" / args.split / f"{args.ckpt}.json"
    question_file = Path(args.question_file) if args.question_file else root / f"{args.split}.jsonl"
    expected = _question_ids(question_file, LOADER_RUNNER, src)
    results = read_jsonl(src, skip_bad_lines=True)
    test_questions = read_jsonl(root / args.test_split)
    submission = vqav2_submission(results, test_questions, expected, str(src), args.allow_missing)
    answered = {r["question_id"] for r in results}
    missing = sum(qid not in answered for qid in expected)
    print(f"total results: {len(results)}, total split: {len(test_questions)}, unanswered: {missing}")
    write_json(dst, submission)
    logger.info("wrote %s (%d questions)", dst, len(submission))


# --- VizWiz ----------------------------------------------------------------------------------


def vizwiz_submission(
    results: Sequence[Record], questions: Sequence[Record], source: str = "answers"
) -> list[dict[str, str]]:
    """`[{"image", "answer"}]` for every test question; the server needs every one answered once."""
    expected = [_question_id(q, f"VizWiz questions: record {i}") for i, q in enumerate(questions, start=1)]
    answers, _ = _answer_texts(results, source, expected)
    return [
        {
            "image": field(question, "image", f"VizWiz questions: record {i}"),
            "answer": normalize_answer(answers[qid]),
        }
        for i, (question, qid) in enumerate(zip(questions, expected, strict=True), start=1)
    ]


def vizwiz_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="VizWiz answers -> EvalAI submission JSON")
    parser.add_argument("--annotation-file", required=True, help="llava_test.jsonl (the question file)")
    parser.add_argument("--result-file", required=True)
    parser.add_argument("--result-upload-file", required=True)
    args = parser.parse_args(argv)
    check_question_file(args.result_file, args.annotation_file, runners=(LOADER_RUNNER,))
    results, questions = read_jsonl(args.result_file), read_jsonl(args.annotation_file)
    print(f"total results: {len(results)}, total split: {len(questions)}")
    write_json(args.result_upload_file, vizwiz_submission(results, questions, args.result_file))


# --- MMBench ---------------------------------------------------------------------------------

MMBENCH_DROPPED_COLUMNS = frozenset({"hint", "category", "source", "image", "comment", "l2-category"})


def mmbench_submission(
    rows: Sequence[Mapping[str, str]],
    results: Sequence[Record],
    all_rounds: bool = False,
    source: str = "answers",
    allow_missing: bool = False,
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the upload sheet: the TSV's columns without hint, category, source,
    image, comment and l2-category, and `prediction` inserted after D. One row per TSV row, in
    TSV order, with its own index and options.

    The server scores a row by its index against its own ground truth. MMBench's circular dev
    and test TSVs hold the rotated copies as rows of their own (index + k * 1,000,000), which a
    plain run answers and the server scores. Answers made with `all_rounds` on a TSV without
    such copies would need sheet rows under indices the server does not hold, so only round 0
    (the TSV's own layout) goes into the sheet, and a warning says so; the rounds are scored
    locally (`eval_mmbench`, dev). `all_rounds` on a TSV with rotated copies is refused. Every
    expected (row, round) still needs one answer; with `allow_missing`, unanswered rows are left
    empty (and counted).
    """
    if all_rounds and any(int(row["index"]) >= CIRCULAR_STRIDE for row in rows):
        raise ValueError(
            f"{source}: answers made with --all-rounds, but the TSV already holds rotated copies "
            f"(index >= {CIRCULAR_STRIDE:,}) whose sheet rows the rounds would overwrite; answer it without --all-rounds"
        )
    answers, coverage = match_rounds(rows, results, all_rounds, source, allow_missing)
    if all_rounds:
        logger.warning(
            "%s: --all-rounds answers; the upload sheet holds round 0 only (one row per question, the "
            "TSV's own index and options): the server scores rows by index against its own ground "
            "truth and holds no rows for rotations this TSV does not contain. Score the rounds "
            "locally with llava.eval.eval_mmbench (dev splits)",
            source,
        )
    columns = [name for name in rows[0] if name not in MMBENCH_DROPPED_COLUMNS]
    columns.insert(columns.index("D") + 1 if "D" in columns else len(columns), "prediction")
    table = []
    for row in rows:
        index = int(row["index"])
        record = answers.get((index, 0))
        values = {
            **row,
            "index": index,
            "prediction": None
            if record is None
            else str(field(record, "text", f"{source}: question {index}")),
        }
        table.append([values[name] if values[name] != "" else None for name in columns])
    empty = sum(values[columns.index("prediction")] is None for values in table)
    if empty:
        logger.warning("MMBench: %d of %d sheet rows have no prediction (left empty)", empty, len(table))
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
    add_coverage_argument(parser)
    args = parser.parse_args(argv)
    answers_file = Path(args.result_dir) / f"{args.experiment}.jsonl"
    run = check_question_file(answers_file, args.annotation_file, runners=(MMBENCH_RUNNER,))
    results = read_jsonl(answers_file)
    columns, table = mmbench_submission(
        read_mmbench_tsv(args.annotation_file),
        results,
        all_rounds=is_all_rounds(results, run),
        source=str(answers_file),
        allow_missing=args.allow_missing,
    )
    path = write_sheet(columns, table, Path(args.upload_dir) / args.experiment)
    logger.info("wrote %s (%d rows)", path, len(table))


# --- MM-Vet ----------------------------------------------------------------------------------


def mmvet_results(
    results: Sequence[Record], source: str = "answers", expected: Sequence[Any] | None = None
) -> dict[str, str]:
    """`{"v1_<qid>": text}`, the input of MM-Vet's GPT-4 grader; every question answered once."""
    texts, _ = _answer_texts(results, source, expected)
    return {f"v1_{qid}": text for qid, text in texts.items()}


def mmvet_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MM-Vet answers -> grader JSON")
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    _add_question_file_argument(parser, "llava-mm-vet.jsonl")
    args = parser.parse_args(argv)
    expected = _question_ids(args.question_file, FREEFORM_RUNNER, args.src) if args.question_file else None
    write_json(args.dst, mmvet_results(read_jsonl(args.src), args.src, expected), indent=2)


# --- SEED-Bench ------------------------------------------------------------------------------


def seed_submission(
    annotation: Mapping[str, Any], predictions: Mapping[str, str], source: str = "SEED-Bench.json"
) -> list[dict[str, Any]]:
    """`{"question_id", "prediction"}` per question of the annotation, in its order, the
    prediction being the answer's text: LLaVA's `scripts/convert_seed_for_submission.py`, which
    fills in nothing (it stops at the first annotated question without an answer). An annotated
    question without a prediction is an error giving their count and a few ids."""
    lines, unanswered = [], []
    for i, question in enumerate(field(annotation, "questions", source)):
        qid = field(question, "question_id", f"{source}: questions[{i}]")
        if str(qid) in predictions:
            lines.append({"question_id": qid, "prediction": predictions[str(qid)]})
        else:
            unanswered.append(qid)
    if unanswered:
        raise ValueError(
            f"SEED-Bench upload: {len(unanswered)} of {len(lines) + len(unanswered)} question(s) of {source} "
            f"have no answer (e.g. {unanswered[:5]!r}); the upload needs one prediction for each, and "
            "none is made up (LLaVA's converter stops there too). Questions that the question file "
            "lacks come from another SEED-Bench.json version (LLaVA issue #1207)"
        )
    return lines


def seed_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SEED-Bench answers -> scores and upload jsonl")
    add_seed_arguments(parser, allow_missing=False)
    parser.add_argument("--result-upload-file", required=True)
    args = parser.parse_args(argv)
    annotation, predictions, _ = score_seed_file(args)
    lines = seed_submission(annotation, predictions, args.annotation_file)
    write_jsonl(args.result_upload_file, lines)
    print(f"SEED-Bench upload: {len(lines)} prediction(s), 0 filled in, written to {args.result_upload_file}")
