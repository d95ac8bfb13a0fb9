"""MMBench / MMBench-CN local scorer for dev splits (circular evaluation) and the TSV reader.

Protocol: https://github.com/open-compass/MMBench (CircularEval) and
https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (MMBench). The dev TSV already
holds the rotated copies of each question (index = base + k * 1,000,000, each with its own
`answer`); a base question counts as right only when every copy is answered right. Answers made
with `--all-rounds` (each row asked once per rotation of its options, `round_id` 0..n-1) are
scored per round, every round of every copy having to be right. Answers are matched to rows by
(question_id, round_id), and every expected round needs exactly one answer. Predictions
are parsed to a letter locally; the official server additionally uses an LLM to extract choices
from free-form answers, which LLaVA-1.5's letter answers do not need.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.eval.run_record import MMBENCH_RUNNER, check_question_file
from llava.eval.scoring_io import (
    Coverage,
    add_results_arguments,
    field,
    index_answers,
    read_jsonl,
    report_scores,
)

logger = logging.getLogger(__name__)

CIRCULAR_STRIDE = 1_000_000
OPTION_LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
_LEADING_LETTER = re.compile(r"^\(?([A-Z])(?:[.):：]|$)")
_ANSWER_IS = re.compile(r"answer is \(?([A-Z])\b")
# The cells pandas reads as NaN by default (`pandas.read_csv(na_values=...)`, default list:
# `pandas._libs.parsers.STR_NA_VALUES`, pandas 2 and 3; pandas 1 lacked "None", which LLaVA's
# `is_none` skips anyway). LLaVA reads the TSV with `pd.read_table` and skips such cells.
PANDAS_NA_STRINGS = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
)  # fmt: skip


def read_mmbench_tsv(path: str | Path) -> list[dict[str, str]]:
    """Rows of an MMBench TSV (base64 images included) as dicts of strings, via the stdlib."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path}: no rows")
    for name in ("index", "question", "A", "B"):
        if name not in rows[0]:
            raise ValueError(f"{path}: missing column {name!r} (has {list(rows[0])})")
    return rows


def is_none(value: str | None) -> bool:
    """LLaVA's `is_none` (`llava/eval/model_vqa_mmbench.py`) on a cell as pandas reads it: an
    absent cell, one pandas reads as NaN (exactly one of `PANDAS_NA_STRINGS`, no stripping), or
    the text "nan" / "none" in any case. A cell of spaces is an option, as in LLaVA."""
    return value is None or value in PANDAS_NA_STRINGS or value.lower() in ("nan", "none")


def row_options(row: Mapping[str, str]) -> list[str]:
    """Option letters of a row: columns A-D up to the first `is_none` one (LLaVA's `get_options`)."""
    letters = []
    for letter in OPTION_LETTERS:
        if is_none(row.get(letter)):
            break
        letters.append(letter)
    return letters


def parse_choice(text: str, row: Mapping[str, str]) -> str | None:
    """Letter chosen in `text`: a leading letter ("B", "B.", "(B)"), else one
    "answer is B", else the single option whose text equals the prediction; None otherwise."""
    letters = row_options(row)
    text = text.strip()
    leading = _LEADING_LETTER.match(text)
    if leading and leading.group(1) in letters:
        return leading.group(1)
    stated = _ANSWER_IS.findall(text)
    if len(stated) == 1 and stated[0] in letters:
        return stated[0]
    same = [letter for letter in letters if row[letter].strip().lower() == text.rstrip(".").lower()]
    return same[0] if len(same) == 1 else None


def round_options(row: Mapping[str, str], round_id: int) -> tuple[list[str], list[str]]:
    """(option texts shown under A, B, ..., the TSV letter of each) in round `round_id`.

    LLaVA's `model_vqa_mmbench --all-rounds` asks round r with the options rotated left r times
    under the fixed letters, and records both lists as `options` and `option_char`
    (https://github.com/haotian-liu/LLaVA/blob/main/llava/eval/model_vqa_mmbench.py).
    """
    letters = row_options(row)
    if not 0 <= round_id < len(letters):
        raise ValueError(f"index {row['index']}: round {round_id} of a question with {len(letters)} options")
    option_char = letters[round_id:] + letters[:round_id]
    return [row[letter] for letter in option_char], option_char


def shown_row(row: Mapping[str, str], round_id: int) -> dict[str, str]:
    """`row` as the model saw it in round `round_id`: the rotated options under A, B, ... and,
    when the row has one, the answer letter under which the right option was shown."""
    options, option_char = round_options(row, round_id)
    shown = {**row, **dict.fromkeys(OPTION_LETTERS, "")}
    shown.update(zip(OPTION_LETTERS, options, strict=False))
    if (row.get("answer") or "").strip() in option_char:
        shown["answer"] = OPTION_LETTERS[option_char.index(row["answer"].strip())]
    return shown


def tsv_letter(text: str, row: Mapping[str, str], round_id: int) -> str | None:
    """The TSV letter the model chose in round `round_id`: the letter parsed from its answer (among
    the letters shown) mapped through that round's rotation."""
    shown = parse_choice(text, shown_row(row, round_id))
    if shown is None:
        return None
    _, option_char = round_options(row, round_id)
    return option_char[OPTION_LETTERS.index(shown)]


@dataclass(frozen=True)
class MMBenchScores:
    circular: float
    vanilla: float
    categories: dict[str, float]
    num_questions: int
    coverage: Coverage


RoundKey = tuple[int, int]  # (TSV index, round_id)


def expected_rounds(rows: Sequence[Mapping[str, str]], all_rounds: bool) -> list[RoundKey]:
    """Every (index, round) to answer: one round per row, or one per option with `--all-rounds`."""
    return [
        (int(row["index"]), round_id)
        for row in rows
        for round_id in range(len(row_options(row)) if all_rounds else 1)
    ]


def _round_key(record: Mapping[str, Any], where: str) -> RoundKey:
    question_id, round_id = field(record, "question_id", where), record.get("round_id", 0)
    try:
        return int(question_id), int(round_id)
    except (TypeError, ValueError):
        raise ValueError(
            f"{where}: question_id {question_id!r} / round_id {round_id!r} are not integers"
        ) from None


def is_all_rounds(records: Sequence[Mapping[str, Any]], run: Mapping[str, Any] | None) -> bool:
    """Whether the answers were made with `--all-rounds`: from the run record when there is one,
    else from the answers (a round_id above 0)."""
    if run is not None:
        return bool(run.get("prompt", {}).get("all_rounds", False))
    return any(int(record.get("round_id", 0)) > 0 for record in records)


def match_rounds(
    rows: Sequence[Mapping[str, str]],
    records: Sequence[Mapping[str, Any]],
    all_rounds: bool,
    source: str,
    allow_missing: bool = False,
) -> tuple[dict[RoundKey, Mapping[str, Any]], Coverage]:
    """`{(index, round): answer}` after the coverage check; an answer whose recorded `options` /
    `option_char` differ from the TSV's rotation was made from another TSV and is refused."""
    by_key, coverage = index_answers(
        records, _round_key, expected_rounds(rows, all_rounds), source, allow_missing=allow_missing
    )
    by_index = {int(row["index"]): row for row in rows}
    for (index, round_id), record in by_key.items():
        options, option_char = round_options(by_index[index], round_id)
        for name, ours in (("options", options), ("option_char", option_char)):
            if name in record and list(record[name]) != ours:
                raise ValueError(
                    f"{source}: question {index} round {round_id}: {name} {record[name]!r}, but the TSV's "
                    f"round {round_id} is {ours!r}: answers of another MMBench file"
                )
    return by_key, coverage


@dataclass(frozen=True)
class CircularGroups:
    """Per question (TSV index mod 1,000,000, the base index): whether each of its rows, and with
    `--all-rounds` each round of each row, was answered right (in TSV order), its category, and
    whether round 0 of its base row was right (the vanilla score; absent without a base row)."""

    hits: dict[int, list[bool]]
    categories: dict[int, str]
    vanilla: dict[int, bool]
    coverage: Coverage


def circular_groups(
    rows: Sequence[Mapping[str, str]],
    records: Sequence[Mapping[str, Any]],
    source: str,
    all_rounds: bool = False,
    allow_missing: bool = False,
) -> CircularGroups:
    """The answers matched to the TSV's rows (`match_rounds`, with its coverage check) and judged
    right or wrong per row and round, grouped by question; with `allow_missing`, questions with an
    unanswered row or round are left out (and counted in the coverage)."""
    if "answer" not in rows[0]:
        raise ValueError(f"{source}: no 'answer' column; only dev splits can be scored locally")
    answers, coverage = match_rounds(rows, records, all_rounds, source, allow_missing)
    unanswered = {key[0] % CIRCULAR_STRIDE for key in coverage.missing}
    groups = CircularGroups({}, {}, {}, coverage)
    for row in rows:
        index = int(row["index"])
        base = index % CIRCULAR_STRIDE
        if base in unanswered:
            continue
        groups.categories.setdefault(base, row.get("category", "") or "unknown")
        for round_id in range(len(row_options(row)) if all_rounds else 1):
            record = answers[(index, round_id)]
            text = str(field(record, "text", f"{source}: question {index} round {round_id}"))
            correct = tsv_letter(text, row, round_id) == row["answer"].strip()
            groups.hits.setdefault(base, []).append(correct)
            if index < CIRCULAR_STRIDE and round_id == 0:
                groups.vanilla[base] = correct
    if not groups.hits:
        raise ValueError(f"{source}: no answers to score")
    return groups


def score_mmbench(
    rows: Sequence[Mapping[str, str]],
    records: Sequence[Mapping[str, Any]],
    source: str,
    all_rounds: bool = False,
    allow_missing: bool = False,
) -> MMBenchScores:
    """Circular accuracy x 100 overall and per category, plus vanilla accuracy on base rows.

    CircularEval (https://github.com/open-compass/MMBench; VLMEvalKit's `mcq_circular_eval`,
    https://github.com/open-compass/VLMEvalKit/blob/main/vlmeval/dataset/utils/multiple_choice.py):
    a question (TSV index mod 1,000,000) counts as right only when every one of its rows, and
    with `--all-rounds` every round of each row, is answered right; a round's letter is mapped
    through that round's rotation before it is compared with the TSV's answer. Vanilla: round 0
    of the base rows. With `allow_missing`, questions with an unanswered row or round are left
    out (and counted in the coverage).
    """
    groups = circular_groups(rows, records, source, all_rounds, allow_missing)
    per_category: dict[str, list[bool]] = {}
    for base, hits in groups.hits.items():
        per_category.setdefault(groups.categories[base], []).append(all(hits))
    passed = [all(hits) for hits in groups.hits.values()]
    vanilla = list(groups.vanilla.values())
    return MMBenchScores(
        circular=100.0 * sum(passed) / len(passed),
        vanilla=100.0 * sum(vanilla) / len(vanilla) if vanilla else 0.0,
        categories={name: 100.0 * sum(v) / len(v) for name, v in sorted(per_category.items())},
        num_questions=len(groups.hits),
        coverage=groups.coverage,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation-file", required=True, help="dev TSV with the 'answer' column")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    parser.add_argument("--benchmark", default="mmbench", choices=("mmbench", "mmbench_cn"))
    add_results_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> MMBenchScores:
    args = build_parser().parse_args(argv)
    run = check_question_file(args.result_file, args.annotation_file, runners=(MMBENCH_RUNNER,))
    rows = read_mmbench_tsv(args.annotation_file)
    records = read_jsonl(args.result_file)
    scores = score_mmbench(
        rows, records, args.result_file, is_all_rounds(records, run), allow_missing=args.allow_missing
    )
    for name, value in scores.categories.items():
        print(f"{name}: {value:.2f}%")
    print(
        f"Questions: {scores.num_questions}, Circular accuracy: {scores.circular:.2f}%, "
        f"Vanilla accuracy: {scores.vanilla:.2f}%"
    )
    details = {"vanilla": scores.vanilla, "categories": scores.categories}
    report_scores(args.results_json, args.benchmark, scores.circular, scores.coverage, **details)
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
