"""POPE scorer: yes/no hallucination probing on COCO (adversarial, popular, random).

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (POPE) and
https://github.com/RUCAIBox/POPE. Answers of a category are matched to that category's label
file by position. An answer is "no" when the words of its first sentence (commas dropped, split
on spaces) contain "No", "not" or "no"; otherwise it is "yes".
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llava.eval.scoring_io import field, read_jsonl, write_results_json

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


def score_pope(answers: Sequence[str], labels: Sequence[str], source: str) -> PopeScores:
    """Confusion counts of answer texts vs "yes"/"no" labels, position by position."""
    if len(answers) != len(labels):
        raise ValueError(f"{source}: {len(answers)} answers but {len(labels)} labels (matched by position)")
    if not answers:
        raise ValueError(f"{source}: no answers")
    tp = fp = tn = fn = 0
    for text, label in zip(answers, labels, strict=True):
        pred_yes, label_yes = not is_no(text), label != "no"
        tp += pred_yes and label_yes
        fp += pred_yes and not label_yes
        tn += not pred_yes and not label_yes
        fn += not pred_yes and label_yes
    return PopeScores(tp, fp, tn, fn)


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


def load_labels(path: Path) -> list[str]:
    return [field(record, "label", f"{path}: line {i}") for i, record in enumerate(read_jsonl(path), start=1)]


def category_files(annotation_dir: Path) -> dict[str, Path]:
    files = {
        path.name[len("coco_pope_") : -len(".json")]: path for path in annotation_dir.glob("coco_pope_*.json")
    }
    if not files:
        raise FileNotFoundError(f"{annotation_dir}: no coco_pope_<category>.json label files")
    return dict(sorted(files.items()))


def score_categories(
    answers: Sequence[Mapping[str, Any]], questions: Mapping[Any, Mapping[str, Any]], annotation_dir: Path
) -> dict[str, PopeScores]:
    by_category: dict[str, list[str]] = {}
    for i, answer in enumerate(answers, start=1):
        qid = field(answer, "question_id", f"answers: record {i}")
        if qid not in questions:
            raise ValueError(f"answers: record {i}: question_id {qid!r} is not in the question file")
        by_category.setdefault(questions[qid]["category"], []).append(answer["text"])
    files = category_files(annotation_dir)
    unlabelled = sorted(set(by_category) - set(files))
    if unlabelled:
        logger.warning(
            "answers of categories without a label file in %s are not scored: %s", annotation_dir, unlabelled
        )
    results = {}
    for category, path in files.items():
        texts = by_category.get(category, [])
        results[category] = score_pope(texts, load_labels(path), str(path))
        print_scores(category, len(texts), results[category])
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation-dir", required=True, help="folder with coco_pope_<category>.json")
    parser.add_argument("--question-file", required=True, help="llava_pope_test.jsonl")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    parser.add_argument("--results-json", default=None, help="headline numbers for llava.eval.report")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, PopeScores]:
    args = build_parser().parse_args(argv)
    questions = {q["question_id"]: q for q in read_jsonl(args.question_file)}
    results = score_categories(read_jsonl(args.result_file), questions, Path(args.annotation_dir))
    mean_f1 = 100.0 * sum(s.f1 for s in results.values()) / len(results)
    print(f"Mean F1 over {len(results)} categories: {mean_f1:.2f}")
    categories = {name: scores.as_dict() for name, scores in results.items()}
    write_results_json(args.results_json, "pope", mean_f1, categories=categories)
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
