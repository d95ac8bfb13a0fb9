"""Compare two answer files on one benchmark: each metric for run a and run b, the difference
b - a, and its 95% interval from a paired bootstrap over the benchmark's items.

    python -m llava.eval.compare --benchmark pope --answers-a A.jsonl --answers-b B.jsonl \\
        --annotation-dir pope/coco --question-file pope/llava_pope_test.jsonl [--json]

Method (`llava.eval.bootstrap`): the paired percentile bootstrap (Efron & Tibshirani, "An
Introduction to the Bootstrap", 1993, ch. 13, https://doi.org/10.1201/9780429246593; paired
resampling of the same test items for both systems as in Koehn, 2004,
https://aclanthology.org/W04-3250/). Each resample draws, with
replacement and from a seeded `numpy.random.Generator`, as many units as there are in each
stratum; both runs are scored on the same draw, and the interval is the 2.5th and 97.5th
percentile of b - a over the resamples. The unit is what the metric is built from:

- POPE: questions, drawn within each split (adversarial, popular, random);
- MME: images (each with its two questions, so acc+ stays defined), drawn within each subtask;
- MMBench / MMBench-CN: circular question groups (a question and its rotated copies, and with
  `--all-rounds` every round), drawn within each category;
- ScienceQA-IMG: problems of the split.

The answers are read, parsed, matched and checked for coverage by the benchmark's own scorer
(every question answered exactly once, in both files), and the metrics on the full data are the
scorer's numbers, in the scorer's units. Identical files give a difference of 0 and [0, 0]. GQA,
SEED-Bench and TextVQA are not covered: their scorers report totals only, not per-question
results.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llava.eval import eval_mmbench, eval_mme, eval_pope, eval_science_qa
from llava.eval.bootstrap import (
    DEFAULT_RESAMPLES,
    MetricFn,
    PairedUnits,
    Stratum,
    pair_strata,
    paired_bootstrap,
    ratio,
)
from llava.eval.run_record import LOADER_RUNNER, MMBENCH_RUNNER, SCIENCE_RUNNER, check_question_file
from llava.eval.scoring_io import read_json, read_jsonl, write_json

logger = logging.getLogger(__name__)

Units = dict[str, dict[Any, list[int]]]  # {stratum: {unit: statistics}} of one run


def paired_strata(a: Units, b: Units, sources: tuple[str, str], sort: bool = False) -> tuple[Stratum, ...]:
    """The strata of both runs, in run a's order (or sorted), each with the same units in both;
    a stratum or unit in one run only raises, naming the two files (`pair_strata`)."""
    names = [*a, *(name for name in b if name not in a)]
    return tuple(
        pair_strata(name, a.get(name, {}), b.get(name, {}), sources)
        for name in (sorted(names) if sort else names)
        if a.get(name) or b.get(name)
    )


# ----------------------------------------------------------------------------------------------
# POPE: questions within each split; the scorer's per-split metrics and mean F1
# ----------------------------------------------------------------------------------------------

POPE_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def pope_metrics(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`eval_pope.PopeScores`' metrics per split from summed (tp, fp, tn, fn), and the mean F1 x 100."""
    per_split = {}
    for split, counts in sums.items():
        tp, fp, tn, fn = (counts[..., i] for i in range(len(eval_pope.OUTCOMES)))
        total = tp + fp + tn + fn
        precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
        per_split[split] = {
            "accuracy": (tp + tn) / total,
            "precision": precision,
            "recall": recall,
            "f1": ratio(2 * precision * recall, precision + recall),
            "yes_ratio": (tp + fp) / total,
        }
    f1_sum = 0
    for scores in per_split.values():
        f1_sum = f1_sum + scores["f1"]
    metrics = {"mean_f1": 100.0 * f1_sum / len(per_split)}
    for split, scores in per_split.items():
        metrics.update({f"{split}/{name}": scores[name] for name in POPE_METRICS})
    return metrics


def _pope_outcomes(path: str, args: argparse.Namespace) -> Units:
    check_question_file(path, args.question_file, runners=(LOADER_RUNNER,))
    by_split, _ = eval_pope.labelled_answers(
        read_jsonl(path), read_jsonl(args.question_file), Path(args.annotation_dir), path, args.question_file
    )
    one_hot = {name: [int(name == other) for other in eval_pope.OUTCOMES] for name in eval_pope.OUTCOMES}
    return {
        split: {qid: one_hot[eval_pope.outcome(text, label)] for qid, text, label in items}
        for split, items in by_split.items()
    }


def pope_units(args: argparse.Namespace) -> PairedUnits:
    a, b = _pope_outcomes(args.answers_a, args), _pope_outcomes(args.answers_b, args)
    strata = paired_strata(a, b, (args.answers_a, args.answers_b))
    return PairedUnits(strata, pope_metrics, "questions, within each split")


def _pope_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotation-dir", required=True, help="folder with coco_pope_<split>.json")
    parser.add_argument("--question-file", required=True, help="llava_pope_test.jsonl")


# ----------------------------------------------------------------------------------------------
# MME: images (two questions each) within each subtask; subtask scores and the two totals
# ----------------------------------------------------------------------------------------------


def mme_metrics_for(perception: Sequence[str], cognition: Sequence[str]) -> MetricFn:
    def metrics(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """acc x 100 + acc+ x 100 per subtask (`eval_mme.score_subtask`), and the sum of the scored
        subtasks of each total (`eval_mme.MMEScores.total`)."""
        subtasks = {name: 100.0 * (s[..., 0] / s[..., 1] + s[..., 2] / s[..., 3]) for name, s in sums.items()}
        totals = {}
        for total_name, names in (("perception", perception), ("cognition", cognition)):
            scored = [subtasks[name] for name in names if name in subtasks]
            if scored:
                total = 0
                for score in scored:
                    total = total + score
                totals[total_name] = total
        return {**totals, **subtasks}

    return metrics


def _mme_images(path: str, args: argparse.Namespace, gt: Mapping[Any, str]) -> Units:
    check_question_file(path, args.question_file, runners=(LOADER_RUNNER,))
    records = eval_mme.convert_answers(read_jsonl(path), gt)
    subtasks = [*args.perception, *args.cognition]
    eval_mme.check_categories(records, args.perception, args.cognition)
    eval_mme.check_mme_coverage(records, gt, subtasks, path)
    by_subtask: dict[str, list[eval_mme.MMERecord]] = {}
    for record in records:
        by_subtask.setdefault(record.category, []).append(record)
    images = {}
    for name in subtasks:
        if name in by_subtask:
            hits = eval_mme.image_hits(by_subtask[name])
            images[name] = {
                image: [sum(h), len(h), int(all(h)), int(len(h) == eval_mme.QUESTIONS_PER_IMAGE)]
                for image, h in hits.items()
            }
    return images


def mme_units(args: argparse.Namespace) -> PairedUnits:
    gt = eval_mme.load_ground_truth(args.mme_dir)
    a, b = _mme_images(args.answers_a, args, gt), _mme_images(args.answers_b, args, gt)
    strata = paired_strata(a, b, (args.answers_a, args.answers_b))
    return PairedUnits(
        strata, mme_metrics_for(args.perception, args.cognition), "images, within each subtask"
    )


def _subtask_list(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


def _mme_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mme-dir", required=True, help="MME_Benchmark_release_version (ground truth)")
    parser.add_argument(
        "--question-file",
        default=None,
        help="llava_mme.jsonl: refuse answers made from another question file",
    )
    for name, default in (("perception", eval_mme.MME_PERCEPTION), ("cognition", eval_mme.MME_COGNITION)):
        parser.add_argument(
            f"--{name}", type=_subtask_list, default=list(default), help=f"comma-separated {name} subtasks"
        )


# ----------------------------------------------------------------------------------------------
# MMBench / MMBench-CN: circular question groups within each category
# ----------------------------------------------------------------------------------------------


def mmbench_metrics(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Circular accuracy x 100 overall and per category, vanilla accuracy x 100
    (`eval_mmbench.score_mmbench`), from summed (passed, questions, vanilla right, vanilla rows)."""
    total = sum(sums.values())
    metrics = {
        "circular": 100.0 * total[..., 0] / total[..., 1],
        "vanilla": ratio(100.0 * total[..., 2], total[..., 3]),
    }
    metrics.update({f"category/{name}": 100.0 * s[..., 0] / s[..., 1] for name, s in sorted(sums.items())})
    return metrics


def _mmbench_groups(path: str, rows: Sequence[Mapping[str, str]], args: argparse.Namespace) -> Units:
    run = check_question_file(path, args.annotation_file, runners=(MMBENCH_RUNNER,))
    records = read_jsonl(path)
    groups = eval_mmbench.circular_groups(rows, records, path, eval_mmbench.is_all_rounds(records, run))
    by_category: Units = {}
    for base, hits in groups.hits.items():
        vanilla = [int(groups.vanilla[base]), 1] if base in groups.vanilla else [0, 0]
        by_category.setdefault(groups.categories[base], {})[base] = [int(all(hits)), 1, *vanilla]
    return by_category


def mmbench_units(args: argparse.Namespace) -> PairedUnits:
    rows = eval_mmbench.read_mmbench_tsv(args.annotation_file)
    a, b = _mmbench_groups(args.answers_a, rows, args), _mmbench_groups(args.answers_b, rows, args)
    strata = paired_strata(a, b, (args.answers_a, args.answers_b), sort=True)
    return PairedUnits(strata, mmbench_metrics, "circular question groups, within each category")


def _mmbench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotation-file", required=True, help="dev TSV with the 'answer' column")


# ----------------------------------------------------------------------------------------------
# ScienceQA-IMG: problems of the split
# ----------------------------------------------------------------------------------------------


def sqa_metrics(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """IMG accuracy (the Table 1 number) and accuracy x 100 (`eval_science_qa.ScienceQAResult`),
    from summed (right, problems, right with image, with image)."""
    (s,) = sums.values()
    return {"img_accuracy": ratio(100.0 * s[..., 2], s[..., 3]), "accuracy": 100.0 * s[..., 0] / s[..., 1]}


def _sqa_problems(
    path: str, args: argparse.Namespace, problems: Mapping[str, Any], split_ids: Sequence[str]
) -> dict[str, list[int]]:
    check_question_file(path, args.question_file, runners=(SCIENCE_RUNNER,))
    predictions, _ = eval_science_qa.load_predictions(path, split_ids)
    result = eval_science_qa.score_science_qa(problems, split_ids, predictions)
    judged = {}
    for right, items in ((1, result.correct), (0, result.incorrect)):
        for item in items:
            image = int(item["is_multimodal"])
            judged[item["question_id"]] = [right, 1, right * image, image]
    return {pid: judged[pid] for pid in split_ids}


def sqa_units(args: argparse.Namespace) -> PairedUnits:
    base = Path(args.base_dir)
    splits = read_json(base / "pid_splits.json")
    if args.split not in splits:
        raise ValueError(f"{base / 'pid_splits.json'}: no split {args.split!r} (has {sorted(splits)})")
    problems = read_json(base / "problems.json")
    a = _sqa_problems(args.answers_a, args, problems, splits[args.split])
    b = _sqa_problems(args.answers_b, args, problems, splits[args.split])
    stratum = pair_strata(args.split, a, b, (args.answers_a, args.answers_b))
    return PairedUnits((stratum,), sqa_metrics, "problems")


def _sqa_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-dir", required=True, help="folder with problems.json and pid_splits.json")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--question-file", default=None, help="llava_test_CQM-A.json: refuse answers of another question file"
    )


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """How a benchmark's two answer files become paired units: its flags (named as in its scorer)
    and the loader."""

    add_arguments: Callable[[argparse.ArgumentParser], None]
    units: Callable[[argparse.Namespace], PairedUnits]


COMPARISONS: dict[str, Comparison] = {
    "pope": Comparison(_pope_arguments, pope_units),
    "mme": Comparison(_mme_arguments, mme_units),
    "mmbench": Comparison(_mmbench_arguments, mmbench_units),
    "mmbench_cn": Comparison(_mmbench_arguments, mmbench_units),
    "sqa": Comparison(_sqa_arguments, sqa_units),
}


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """The comparison as the JSON object `--json` prints and `--results-json` writes."""
    units = COMPARISONS[args.benchmark].units(args)
    results = paired_bootstrap(units, args.resamples, args.seed)
    return {
        "benchmark": args.benchmark,
        "a": {"label": args.label_a or args.answers_a, "answers": args.answers_a},
        "b": {"label": args.label_b or args.answers_b, "answers": args.answers_b},
        "method": f"paired percentile bootstrap over {units.description}",
        "resamples": args.resamples,
        "seed": args.seed,
        "units": {stratum.name: len(stratum.a) for stratum in units.strata},
        "metrics": {name: result.as_dict() for name, result in results.items()},
    }


def format_comparison(result: Mapping[str, Any]) -> str:
    """The comparison as a text table: one line per metric with a, b, the difference and its interval."""
    units = ", ".join(f"{name} {count}" for name, count in result["units"].items())
    lines = [
        f"{result['benchmark']}: a = {result['a']['label']}, b = {result['b']['label']}",
        f"{result['method']} ({units}); {result['resamples']} resamples, seed {result['seed']}",
    ]
    width = max(len("metric"), *(len(name) for name in result["metrics"]))
    lines.append(f"{'metric':<{width}}  {'a':>10}  {'b':>10}  {'difference':>10}  ci95")
    for name, m in result["metrics"].items():
        lo, hi = m["ci95"]
        lines.append(
            f"{name:<{width}}  {m['a']:>10.4f}  {m['b']:>10.4f}  {m['difference']:>10.4f}  [{lo:.4f}, {hi:.4f}]"
        )
    return "\n".join(lines)


def build_parser(benchmark: str | None = None) -> argparse.ArgumentParser:
    """The command's flags, with those of `benchmark` (its scorer's question and annotation flags)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", required=True, choices=sorted(COMPARISONS))
    parser.add_argument("--answers-a", required=True, help="answers jsonl of run a (the baseline)")
    parser.add_argument("--answers-b", required=True, help="answers jsonl of run b")
    parser.add_argument("--label-a", default=None, help="name of run a in the output (default: its path)")
    parser.add_argument("--label-b", default=None, help="name of run b in the output (default: its path)")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument(
        "--results-json", default=None, help="also write the JSON here (`llava.eval.report --comparison`)"
    )
    if benchmark in COMPARISONS:
        COMPARISONS[benchmark].add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--benchmark", default=None)
    known, _ = pre.parse_known_args(argv)  # the benchmark decides which further flags there are
    parser = build_parser(known.benchmark)
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error(f"--resamples must be >= 1, got {args.resamples}")
    result = compare(args)
    if args.results_json:
        write_json(args.results_json, result, indent=2)
        logger.info("wrote the comparison to %s", args.results_json)
    print(json.dumps(result, indent=2) if args.json else format_comparison(result))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
