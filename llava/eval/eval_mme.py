"""MME: convert runner answers to the MME eval-tool format, then score acc + acc+ per subtask.

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (MME) and the
MME eval tool (`calculation.py`, https://github.com/BradyFU/Awesome-Multimodal-Large-Language-Models/tree/Evaluation).
Each subtask scores acc x 100 + acc+ x 100 (acc+: images whose two questions are both right).
The per-category txt files hold `image\tquestion\tanswer\tprediction` lines, the layout the
official `calculation.py` reads, so they can be cross-checked with it. Every ground-truth
question of the scored subtasks needs exactly one answer (`--mme-dir` is the ground truth, for
the runner's answers and for existing txt files alike).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.eval import prompts
from llava.eval.run_record import LOADER_RUNNER, check_question_file
from llava.eval.scoring_io import (
    Coverage,
    add_results_arguments,
    check_coverage,
    field,
    read_jsonl,
    report_scores,
)

logger = logging.getLogger(__name__)

MME_PERCEPTION: tuple[str, ...] = (
    "existence", "count", "position", "color", "posters",
    "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
MME_COGNITION: tuple[str, ...] = (
    "commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning",
)  # fmt: skip

SHORT_ANSWER_SUFFIX = prompts.SHORT_ANSWER_SUFFIX.strip()
YES_NO_SUFFIX = "Please answer yes or no."
QUESTIONS_PER_IMAGE = 2


# A model answering every question by a fair coin: acc 0.5, acc+ (both right) 0.25, score 75 of 200.
GUESSING = {"acc": 0.5, "acc_plus": 0.25, "score": 75.0}


@dataclass(frozen=True)
class MMERecord:
    """One answered yes/no question. `image` groups the questions for acc+."""

    category: str
    image: str
    question: str
    answer: str
    prediction: str


@dataclass(frozen=True)
class SubtaskScore:
    acc: float
    acc_plus: float

    @property
    def score(self) -> float:
        return 100.0 * (self.acc + self.acc_plus)


@dataclass(frozen=True)
class MMEScores:
    """The scored subtasks, and the subtasks each total (perception, cognition) is the sum of. A
    total with none of its subtasks scored is None; one with some unscored is partial."""

    subtasks: dict[str, SubtaskScore]
    totals: dict[str, tuple[str, ...]]

    def total(self, name: str) -> float | None:
        scored = [self.subtasks[subtask].score for subtask in self.totals[name] if subtask in self.subtasks]
        return sum(scored) if scored else None

    @property
    def perception(self) -> float | None:
        return self.total("perception")

    @property
    def cognition(self) -> float | None:
        return self.total("cognition")

    @property
    def unscored(self) -> list[str]:
        return [
            subtask for names in self.totals.values() for subtask in names if subtask not in self.subtasks
        ]

    def partial_note(self, name: str) -> str | None:
        """None when total `name` is over all its subtasks, else how many it is over."""
        names = self.totals[name]
        scored = sum(subtask in self.subtasks for subtask in names)
        return None if scored == len(names) else f"{scored} of {len(names)} subtasks"

    def as_dict(self) -> dict[str, Any]:
        return {
            "perception": self.perception,
            "cognition": self.cognition,
            "unscored": self.unscored,
            "subtasks": {name: s.score for name, s in self.subtasks.items()},
            "acc": {name: s.acc for name, s in self.subtasks.items()},
            "acc_plus": {name: s.acc_plus for name, s in self.subtasks.items()},
        }


def parse_yes_no(prediction: str) -> str:
    """ "yes", "no" or "other": exact word, else yes/no within the first 4 characters."""
    text = prediction.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def image_hits(records: Sequence[MMERecord], require_pairs: bool = True) -> dict[str, list[bool]]:
    """`{image: [question answered right, ...]}` of one subtask's records, in record order. Every
    image needs its two questions unless `not require_pairs` (`--allow-missing`); a ground truth
    other than yes/no raises."""
    by_image: dict[str, list[bool]] = {}
    for record in records:
        answer = record.answer.strip().lower()
        if answer not in ("yes", "no"):
            raise ValueError(
                f"MME {record.category}/{record.image}: ground truth {record.answer!r} is not yes/no"
            )
        by_image.setdefault(record.image, []).append(parse_yes_no(record.prediction) == answer)
    for image, hits in by_image.items():
        if len(hits) > QUESTIONS_PER_IMAGE or (require_pairs and len(hits) != QUESTIONS_PER_IMAGE):
            raise ValueError(
                f"MME {records[0].category}/{image}: {len(hits)} questions, expected {QUESTIONS_PER_IMAGE}"
            )
    return by_image


def score_subtask(records: Sequence[MMERecord], require_pairs: bool = True) -> SubtaskScore:
    """acc over the records, acc+ over their images. Every image needs its two questions unless
    `not require_pairs` (`--allow-missing`): then acc+ counts only the images with both."""
    by_image = image_hits(records, require_pairs)
    paired = [hits for hits in by_image.values() if len(hits) == QUESTIONS_PER_IMAGE]
    if not paired:
        raise ValueError(f"MME {records[0].category}: no image with both questions answered")
    acc = sum(sum(hits) for hits in by_image.values()) / len(records)
    acc_plus = sum(all(hits) for hits in paired) / len(paired)
    return SubtaskScore(acc, acc_plus)


def guessing_p_value(score: float, images: int) -> float:
    """One-sided p-value of a subtask score against guessing: the probability that a
    model answering each of the `images` x 2 questions by a fair coin scores `score` or more.

    Exact: per image, 0 / 1 / 2 right answers (odds 1/4, 1/2, 1/4) add 0 / 1 / 4 units of
    100 / (2 x images) to the score (each right answer 1 unit of acc, both right 2 more of acc+).
    """
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    observed = max(0, math.ceil(score * 2 * images / 100 - 1e-9))
    tails = _guessed_tails(images)
    return min(1.0, tails[observed]) if observed < len(tails) else 0.0


@functools.lru_cache(maxsize=16)
def _guessed_tails(images: int) -> tuple[float, ...]:
    """P(a guessed subtask's score >= u units) for every u (see `guessing_p_value`)."""
    dist = [1.0]
    for _ in range(images):
        grown = [0.0] * (len(dist) + 4)
        for units, p in enumerate(dist):
            for step, q in ((0, 0.25), (1, 0.5), (4, 0.25)):
                grown[units + step] += p * q
        dist = grown
    return tuple(itertools.accumulate(reversed(dist)))[::-1]


def check_categories(
    records: Iterable[MMERecord], perception: Sequence[str], cognition: Sequence[str]
) -> None:
    """Records of a category outside both lists raise, since they would otherwise be ignored."""
    unknown = {record.category for record in records} - set(perception) - set(cognition)
    if unknown:
        raise ValueError(f"MME records for categories outside perception/cognition: {sorted(unknown)}")


def score_mme(
    records: Iterable[MMERecord],
    perception: Sequence[str] = MME_PERCEPTION,
    cognition: Sequence[str] = MME_COGNITION,
    require_pairs: bool = True,
) -> MMEScores:
    """acc + acc+ per subtask and the perception / cognition totals.

    Subtasks absent from `records` are left out of the totals (logged), which are then partial;
    records of a category outside both lists raise, since they would otherwise be silently ignored.
    """
    records = list(records)
    check_categories(records, perception, cognition)
    by_category: dict[str, list[MMERecord]] = {}
    for record in records:
        by_category.setdefault(record.category, []).append(record)
    missing = [name for name in (*perception, *cognition) if name not in by_category]
    if missing:
        logger.warning("MME subtasks without records (not in the totals): %s", missing)
    subtasks = {
        name: score_subtask(by_category[name], require_pairs=require_pairs)
        for name in (*perception, *cognition)
        if name in by_category
    }
    return MMEScores(subtasks, {"perception": tuple(perception), "cognition": tuple(cognition)})


def print_scores(scores: MMEScores, partial: Mapping[str, str | None]) -> None:
    """The eval tool's table; a total over part of its subtasks or questions says so (`partial`)."""
    for name, names in scores.totals.items():
        total = scores.total(name)
        print(f"=========== {name.capitalize()} ===========")
        if total is None:
            print("total score: - (none of its subtasks scored)")
        else:
            print(f"total score: {total:.2f}" + (f" (partial: {partial[name]})" if partial[name] else ""))
        for subtask in names:
            if subtask in scores.subtasks:
                print(f"\t {subtask}  score: {scores.subtasks[subtask].score:.2f}")


def load_ground_truth(mme_dir: str | Path) -> dict[tuple[str, str, str], str]:
    """{(category, txt file name, question): answer} from the MME release folder.

    A category keeps its txt files in `<cat>/questions_answers_YN/` when it has an `images/`
    subfolder, else directly in `<cat>/`.
    """
    gt: dict[tuple[str, str, str], str] = {}
    categories = [path for path in sorted(Path(mme_dir).iterdir()) if path.is_dir()]
    if not categories:
        raise FileNotFoundError(f"{mme_dir}: no MME category folders")
    for category in categories:
        qa_dir = category / "questions_answers_YN" if (category / "images").is_dir() else category
        for txt in sorted(qa_dir.glob("*.txt")):
            for line_no, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                parts = line.strip().split("\t")
                if len(parts) != 2:
                    raise ValueError(f"{txt}:{line_no}: expected 'question<TAB>answer', got {line!r}")
                gt[(category.name, txt.name, parts[0])] = parts[1]
    return gt


def lookup_answer(
    gt: Mapping[tuple[str, str, str], str], category: str, txt_name: str, prompt: str
) -> tuple[str, str]:
    """(question as written in MME's txt, answer) for a runner prompt.

    Runner prompts may carry the short-answer suffix (dropped here); MME's own questions end
    with "Please answer yes or no.", a few of them after two spaces.
    """
    question = prompt.replace(SHORT_ANSWER_SUFFIX, "").strip()
    candidates = [question]
    if YES_NO_SUFFIX not in question:
        candidates = [f"{question} {YES_NO_SUFFIX}", f"{question}  {YES_NO_SUFFIX}"]
    for candidate in candidates:
        if (category, txt_name, candidate) in gt:
            return candidate, gt[(category, txt_name, candidate)]
    raise KeyError(f"MME ground truth has no question {question!r} for {category}/{txt_name}")


def record_key(category: str, image: str, question: str) -> tuple[str, str, str]:
    """The ground-truth key of an answered question: (category, txt file name, question)."""
    return category, f"{Path(image).stem}.txt", question


def check_mme_coverage(
    records: Sequence[MMERecord],
    gt: Mapping[tuple[str, str, str], str],
    categories: Sequence[str],
    source: str,
    allow_missing: bool = False,
) -> Coverage:
    """Every ground-truth question of the scored `categories` answered exactly once."""
    wanted = set(categories)
    expected = [key for key in gt if key[0] in wanted]
    answered = [record_key(r.category, r.image, r.question) for r in records]
    return check_coverage(expected, answered, source, allow_missing=allow_missing)


def convert_answers(
    answers: Sequence[Mapping[str, Any]], gt: Mapping[tuple[str, str, str], str]
) -> list[MMERecord]:
    """Runner answers (question_id = `<category>/.../<image>`) joined with MME's ground truth."""
    records = []
    for i, answer in enumerate(answers, start=1):
        where = f"MME answers: record {i}"
        qid = str(field(answer, "question_id", where))
        category, image = qid.split("/", 1)[0], qid.rsplit("/", 1)[-1]
        txt_name = f"{Path(image).stem}.txt"
        question, gt_answer = lookup_answer(gt, category, txt_name, str(field(answer, "prompt", where)))
        records.append(MMERecord(category, image, question, gt_answer, str(field(answer, "text", where))))
    return records


def _one_line(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")


def write_mme_txt(records: Sequence[MMERecord], out_dir: str | Path) -> list[Path]:
    """One `<category>.txt` per category, lines `image\tquestion\tanswer\tprediction`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {}
    for r in records:
        row = (r.image, r.question, r.answer, _one_line(r.prediction))
        lines.setdefault(r.category, []).append("\t".join(row))
    paths = []
    for category, rows in lines.items():
        path = out_dir / f"{category}.txt"
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def read_mme_txt(results_dir: str | Path) -> list[MMERecord]:
    """Records back from a folder of `<category>.txt` files (ours or the eval tool's)."""
    records = []
    for path in sorted(Path(results_dir).glob("*.txt")):
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 4:
                raise ValueError(f"{path}:{line_no}: expected image, question, answer, prediction")
            records.append(MMERecord(path.stem, *parts))
    if not records:
        raise FileNotFoundError(f"{results_dir}: no MME <category>.txt files")
    return records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers-file", default=None, help="runner answers for MME/llava_mme.jsonl")
    parser.add_argument("--mme-dir", default=None, help="MME_Benchmark_release_version (ground truth)")
    parser.add_argument(
        "--output-dir", default=None, help="where the per-category txt files go (with --answers-file)"
    )
    parser.add_argument("--results-dir", default=None, help="score existing txt files instead of converting")
    parser.add_argument(
        "--question-file",
        default=None,
        help="llava_mme.jsonl: refuse answers made from another question file (their run record)",
    )
    parser.add_argument(
        "--perception",
        default=",".join(MME_PERCEPTION),
        help="comma-separated perception subtasks (default: MME's)",
    )
    parser.add_argument(
        "--cognition",
        default=",".join(MME_COGNITION),
        help="comma-separated cognition subtasks (default: MME's)",
    )
    add_results_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> MMEScores:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.mme_dir or bool(args.results_dir) == bool(args.answers_file):
        parser.error("give --mme-dir (the ground truth), and --answers-file or --results-dir")
    gt = load_ground_truth(args.mme_dir)
    if args.results_dir:
        records, source = read_mme_txt(args.results_dir), args.results_dir
    else:
        check_question_file(args.answers_file, args.question_file, runners=(LOADER_RUNNER,))
        records, source = convert_answers(read_jsonl(args.answers_file), gt), args.answers_file
    perception = [c for c in args.perception.split(",") if c]
    cognition = [c for c in args.cognition.split(",") if c]
    check_categories(records, perception, cognition)
    coverage = check_mme_coverage(records, gt, [*perception, *cognition], source, args.allow_missing)
    if args.answers_file and args.output_dir:
        write_mme_txt(records, args.output_dir)
    scores = score_mme(
        records, perception=perception, cognition=cognition, require_pairs=not args.allow_missing
    )
    partial = {name: scores.partial_note(name) or coverage.partial for name in scores.totals}
    print_scores(scores, partial)
    report_scores(
        args.results_json,
        "mme",
        scores.perception,
        coverage,
        partial=partial["perception"],
        partial_totals=partial,
        **scores.as_dict(),
    )
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
