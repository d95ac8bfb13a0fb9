"""POPE scorer: yes/no hallucination probing on COCO (adversarial, popular, random).

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (POPE) and
https://github.com/RUCAIBox/POPE. The k-th question of a category in the question file is the
k-th line of that category's label file (checked on image and text); answers are matched to
questions by question id, so their order does not matter, and every labelled question needs
exactly one answer. An answer is "no" when the words of its first sentence (commas dropped, split
on spaces) contain "No", "not" or "no"; otherwise it is "yes".
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llava.eval.run_record import LOADER_RUNNER, check_question_file
from llava.eval.scoring_io import (
    Coverage,
    add_results_arguments,
    field,
    index_answers,
    read_jsonl,
    report_scores,
)

logger = logging.getLogger(__name__)

CATEGORIES: tuple[str, ...] = ("adversarial", "popular", "random")
_NEGATIONS = frozenset({"No", "not", "no"})


def is_no(text: str) -> bool:
    first_sentence = text.split(".", 1)[0]
    return not _NEGATIONS.isdisjoint(first_sentence.replace(",", "").split(" "))


@dataclass(frozen=True)
class PopeScores:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / (self.tp + self.tn + self.fp + self.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def yes_ratio(self) -> float:
        return (self.tp + self.fp) / (self.tp + self.tn + self.fp + self.fn)

    def as_dict(self) -> dict[str, float]:
        metrics = ("accuracy", "precision", "recall", "f1", "yes_ratio")
        return {**asdict(self), **{name: getattr(self, name) for name in metrics}}


OUTCOMES: tuple[str, ...] = ("tp", "fp", "tn", "fn")


def outcome(text: str, label: str) -> str:
    """One answer's cell of the confusion matrix ("tp", "fp", "tn" or "fn"): its yes/no (`is_no`)
    against a "yes"/"no" label (anything but "no" counts as yes)."""
    pred_yes, label_yes = not is_no(text), label != "no"
    if pred_yes:
        return "tp" if label_yes else "fp"
    return "fn" if label_yes else "tn"


def score_pope(answers: Sequence[str], labels: Sequence[str], source: str) -> PopeScores:
    """Confusion counts of answer texts vs "yes"/"no" labels, position by position."""
    if len(answers) != len(labels):
        raise ValueError(f"{source}: {len(answers)} answers but {len(labels)} labels (matched by position)")
    if not answers:
        raise ValueError(f"{source}: no answers")
    counts = Counter(outcome(text, label) for text, label in zip(answers, labels, strict=True))
    return PopeScores(*(counts[name] for name in OUTCOMES))


def print_scores(category: str, count: int, scores: PopeScores) -> None:
    print(f"Category: {category}, # samples: {count}")
    print("TP\tFP\tTN\tFN\t")
    print(f"{scores.tp}\t{scores.fp}\t{scores.tn}\t{scores.fn}")
    print(f"Accuracy: {scores.accuracy}")
    print(f"Precision: {scores.precision}")
    print(f"Recall: {scores.recall}")
    print(f"F1 score: {scores.f1}")
    print(f"Yes ratio: {scores.yes_ratio}")
    print("====================================")


def load_labels(path: Path) -> list[dict[str, Any]]:
    """The lines of a `coco_pope_<category>.json` label file (JSON lines with `label`, and in
    POPE's files also `question_id`, `image` and `text`)."""
    records = read_jsonl(path)
    for i, record in enumerate(records, start=1):
        field(record, "label", f"{path}: line {i}")
    return records


def category_files(annotation_dir: Path) -> dict[str, Path]:
    files = {
        path.name[len("coco_pope_") : -len(".json")]: path for path in annotation_dir.glob("coco_pope_*.json")
    }
    if not files:
        raise FileNotFoundError(f"{annotation_dir}: no coco_pope_<category>.json label files")
    return dict(sorted(files.items()))


def _question_text(question: Mapping[str, Any]) -> str:
    """The question without the short-answer suffix the LLaVA question file appends."""
    return str(question.get("text", "")).split("\n", 1)[0].strip()


def label_questions(
    questions: Sequence[Mapping[str, Any]], files: Mapping[str, Path], source: str
) -> dict[Any, tuple[str, str]]:
    """`{question_id: (category, label)}` for the questions of every labelled category.

    The k-th question of a category in the question file is the k-th line of that category's
    label file: the pairing LLaVA's scorer relies on, made here once from the question file (so
    the answers' order no longer matters) and checked line by line on `image` and the question
    text, where the label line has them.
    """
    by_category: dict[str, list[Mapping[str, Any]]] = {}
    seen: set[Any] = set()
    for i, question in enumerate(questions, start=1):
        where = f"{source}: record {i}"
        qid = field(question, "question_id", where)
        if qid in seen:
            raise ValueError(f"{where}: question_id {qid!r} appears more than once")
        seen.add(qid)
        by_category.setdefault(str(field(question, "category", where)), []).append(question)
    unlabelled = sorted(set(by_category) - set(files))
    if unlabelled:
        logger.warning("questions of categories without a label file are not scored: %s", unlabelled)
    labels: dict[Any, tuple[str, str]] = {}
    for category, path in files.items():
        lines, asked = load_labels(path), by_category.get(category, [])
        if len(lines) != len(asked):
            raise ValueError(
                f"{path} has {len(lines)} labels but {source} has {len(asked)} {category!r} questions"
            )
        for line_no, (line, question) in enumerate(zip(lines, asked, strict=True), start=1):
            for name, theirs, ours in (
                ("image", line.get("image"), question.get("image")),
                ("text", line.get("text"), _question_text(question) if "text" in line else None),
            ):
                if theirs is not None and ours is not None and str(theirs).strip() != str(ours).strip():
                    raise ValueError(
                        f"{path}: line {line_no} ({name} {theirs!r}) does not belong to question "
                        f"{question['question_id']!r} of {source} ({name} {ours!r}): the label file "
                        "and the question file are of different POPE versions"
                    )
            labels[question["question_id"]] = (category, str(line["label"]))
    return labels


def labelled_answers(
    answers: Sequence[Mapping[str, Any]],
    questions: Sequence[Mapping[str, Any]],
    annotation_dir: Path,
    source: str = "answers",
    question_source: str = "questions",
    allow_missing: bool = False,
) -> tuple[dict[str, list[tuple[Any, str, str]]], Coverage]:
    """`{category: [(question_id, answer text, label), ...]}` for every category with a label file,
    in the label file's order, after the coverage check (every labelled question answered exactly
    once; with `allow_missing`, unanswered questions are left out and counted). Answers to
    questions of categories without a label file are ignored, as they are not scored."""
    files = category_files(annotation_dir)
    labels = label_questions(questions, files, question_source)
    unlabelled_ids = {q["question_id"] for q in questions if str(q["category"]) not in files}
    scored = [a for a in answers if a.get("question_id") not in unlabelled_ids]
    by_id, coverage = index_answers(
        scored, lambda r, where: field(r, "question_id", where), labels, source, allow_missing=allow_missing
    )
    by_category: dict[str, list[tuple[Any, str, str]]] = {category: [] for category in files}
    for qid, (category, label) in labels.items():
        if qid in by_id:
            text = str(field(by_id[qid], "text", f"{source}: question {qid!r}"))
            by_category[category].append((qid, text, label))
    return by_category, coverage


def score_categories(
    answers: Sequence[Mapping[str, Any]],
    questions: Sequence[Mapping[str, Any]],
    annotation_dir: Path,
    source: str = "answers",
    question_source: str = "questions",
    allow_missing: bool = False,
) -> tuple[dict[str, PopeScores], Coverage]:
    """Per-category scores of answers matched to their labels by question id (any order).

    With `allow_missing`, a category without a single answer is left out of the scores (it has
    no confusion matrix to score), logged and printed as skipped; its questions stay counted as
    missing in the coverage.
    """
    by_category, coverage = labelled_answers(
        answers, questions, annotation_dir, source, question_source, allow_missing=allow_missing
    )
    results = {}
    for category, items in by_category.items():
        texts, category_labels = [text for _, text, _ in items], [label for _, _, label in items]
        if not texts and allow_missing:
            logger.warning("%s: no answer in category %r; it is skipped (--allow-missing)", source, category)
            print(f"Category: {category}, skipped: no answers")
            continue
        results[category] = score_pope(texts, category_labels, f"{source} ({category})")
        print_scores(category, len(texts), results[category])
    return results, coverage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation-dir", required=True, help="folder with coco_pope_<category>.json")
    parser.add_argument("--question-file", required=True, help="llava_pope_test.jsonl")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    add_results_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, PopeScores]:
    args = build_parser().parse_args(argv)
    check_question_file(args.result_file, args.question_file, runners=(LOADER_RUNNER,))
    results, coverage = score_categories(
        read_jsonl(args.result_file),
        read_jsonl(args.question_file),
        Path(args.annotation_dir),
        source=args.result_file,
        question_source=args.question_file,
        allow_missing=args.allow_missing,
    )
    if not results:
        raise ValueError(f"{args.result_file}: no answers in any POPE category")
    skipped = [name for name in category_files(Path(args.annotation_dir)) if name not in results]
    mean_f1 = 100.0 * sum(s.f1 for s in results.values()) / len(results)
    print(f"Mean F1 over {len(results)} categories: {mean_f1:.2f}")
    if skipped:
        print(f"INCOMPLETE: categories without answers, left out of the mean: {', '.join(skipped)}")
    categories = {name: scores.as_dict() for name, scores in results.items()}
    report_scores(
        args.results_json, "pope", mean_f1, coverage, categories=categories, skipped_categories=skipped
    )
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
