"""LLaVA-Bench (in-the-wild) judge: a GPT-4-style reviewer behind any OpenAI-compatible endpoint,
and the relative-score summariser.

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (LLaVA-Bench) and
LLaVA's `llava/eval/eval_gpt_review_bench.py` / `summarize_gpt_review.py`: the judge sees the
image context (captions), the question, answer 1 (GPT-4's reference) and answer 2 (the model),
and writes two 1-10 scores on its first line. Relative score = 100 * mean(model) / mean(GPT-4)
per category. The built-in instruction is our wording of the same request; for numbers
comparable with published ones pass LLaVA's `rule.json` with `--rule`.

There is no default endpoint: `--base-url` (and, for a key, `--api-key-env`) must be given. The
review file is appended to as reviews arrive; a rerun keeps the finished reviews and asks only
for the missing ones (a line cut short by a kill is dropped), and `<output>.meta.json` records
the judge model and settings, so a rerun with another judge is refused (`--overwrite` starts
afresh). A review file without that record (reviews of unknown origin) is refused too, unless
`--adopt-reviews` says they are yours, made by this judge; the record is written only once the
reviews already in the file have been checked.

    python -m llava.eval.judge review --question questions.jsonl --context context.jsonl \
        --answer-list answers_gpt4.jsonl answers/model.jsonl --output reviews/model.jsonl \
        --base-url https://api.openai.com/v1 --api-key-env OPENAI_API_KEY --model gpt-4-0314
    python -m llava.eval.judge summarize -f reviews/model.jsonl

The endpoint's client is `llava.eval.chat_client`; reading and summarising scores,
`llava.eval.judge_scores`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.eval import run_record
from llava.eval.chat_client import ChatClient
from llava.eval.judge_scores import CATEGORY_PREFIX, parse_scores, summarize
from llava.eval.run_record import FREEFORM_RUNNER, check_question_file, file_sha256
from llava.eval.scoring_io import (
    field,
    index_answers,
    read_json,
    read_jsonl,
    read_jsonl_for_append,
    write_results_json,
)

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = "You are a helpful and precise assistant that checks the quality of answers."
CATEGORIES: tuple[str, ...] = ("conv", "detail", "complex")
_DEFAULT_INSTRUCTION = (
    "Please assess the two AI assistants' responses to the user question above. The user asked "
    "the question while looking at an image; the image is described to you by the sentences in "
    "the context.\nRate each response for helpfulness, relevance, accuracy and level of detail, "
    "with one overall score from 1 to 10 per assistant, higher meaning better.\nOn the first line, "
    "write only the two scores, for Assistant 1 and Assistant 2, separated by a space.\nFrom the "
    "next line on, explain your assessment without bias, making sure that the order in which the "
    "responses were shown does not influence your judgment."
)
JUDGE_FORMAT = "llava-eval-judge/1"
_FRESH_START = "pass --overwrite to review afresh, or choose another --output"


@dataclass(frozen=True)
class Rule:
    role: str
    prompt: str


DEFAULT_RULES: dict[str, Rule] = {
    f"{CATEGORY_PREFIX}{name}": Rule("Assistant", _DEFAULT_INSTRUCTION) for name in CATEGORIES
}


def load_rules(path: str | Path | None) -> dict[str, Rule]:
    """Rules from LLaVA's `rule.json` ({category: {"role", "prompt"}}), or the built-in ones."""
    if path is None:
        return dict(DEFAULT_RULES)
    raw = read_json(path)
    return {
        name: Rule(field(r, "role", f"{path}: {name}"), field(r, "prompt", f"{path}: {name}"))
        for name, r in raw.items()
    }


def build_review_content(context: str, question: str, answer1: str, answer2: str, rule: Rule) -> str:
    """The judge's user message: context, question, both answers, then the instruction."""
    role = rule.role
    return (
        f"[Context]\n{context}\n\n"
        f"[Question]\n{question}\n\n"
        f"[{role} 1]\n{answer1}\n\n[End of {role} 1]\n\n"
        f"[{role} 2]\n{answer2}\n\n[End of {role} 2]\n\n"
        f"[System]\n{rule.prompt}\n\n"
    )


@dataclass(frozen=True)
class ReviewRequest:
    question_id: Any
    category: str
    answer1_id: Any
    answer2_id: Any
    content: str


def _question_id(record: Mapping[str, Any], where: str) -> Any:
    return field(record, "question_id", where)


def build_requests(
    questions: Sequence[Mapping[str, Any]],
    contexts: Sequence[Mapping[str, Any]],
    reference_answers: Sequence[Mapping[str, Any]],
    model_answers: Sequence[Mapping[str, Any]],
    rules: Mapping[str, Rule],
) -> list[ReviewRequest]:
    """One review per question; answers are joined by question_id (each question answered
    exactly once in both answer files), contexts by image."""
    captions = {field(c, "image", "context"): c.get("caption", "") for c in contexts}
    question_ids = [
        field(q, "question_id", f"questions: record {i}") for i, q in enumerate(questions, start=1)
    ]
    refs, _ = index_answers(reference_answers, _question_id, question_ids, "reference answers")
    preds, _ = index_answers(model_answers, _question_id, question_ids, "model answers")
    requests = []
    for i, q in enumerate(questions, start=1):
        where = f"questions: record {i}"
        qid, image = field(q, "question_id", where), field(q, "image", where)
        category = CATEGORY_PREFIX + field(q, "category", where)
        if image not in captions:
            raise ValueError(f"{where}: the context file has no caption for image {image!r}")
        if category not in rules:
            raise ValueError(f"{where}: no judge rule for category {category!r} (rules: {sorted(rules)})")
        caption = captions[image]
        context = "\n".join(caption) if isinstance(caption, list) else str(caption)
        ref, pred = refs[qid], preds[qid]
        content = build_review_content(context, q["text"], ref["text"], pred["text"], rules[category])
        requests.append(
            ReviewRequest(qid, category, ref.get("answer_id", qid), pred.get("answer_id", qid), content)
        )
    return requests


def _review_key(request: ReviewRequest) -> tuple[Any, Any, Any, str]:
    return request.question_id, request.answer1_id, request.answer2_id, request.category


def finished_reviews(requests: Sequence[ReviewRequest], output: Path) -> dict[Any, dict[str, Any]]:
    """The reviews already in `output`, by question id, ready to be kept.

    A partial last line from a kill is removed. A review of a question that is not asked now, of
    other answers (answer ids) or another category, or a question reviewed twice, is an error:
    the file belongs to another comparison.
    """
    wanted = {req.question_id: req for req in requests}
    done: dict[Any, dict[str, Any]] = {}
    for line_no, review in read_jsonl_for_append(output):
        where = f"{output}:{line_no}"
        if not isinstance(review, dict):
            raise ValueError(f"{where}: not a review (a JSON object); {_FRESH_START}")
        qid = field(review, "question_id", where)
        if qid not in wanted:
            raise ValueError(f"{where}: a review of question {qid!r}, which is not asked now; {_FRESH_START}")
        if qid in done:
            raise ValueError(f"{where}: question {qid!r} is reviewed a second time; {_FRESH_START}")
        req = wanted[qid]
        found = (qid, review.get("answer1_id"), review.get("answer2_id"), review.get("category"))
        if found != _review_key(req):
            raise ValueError(
                f"{where}: review of (question, answer 1, answer 2, category) {found!r}, but this run "
                f"compares {_review_key(req)!r}; {_FRESH_START}"
            )
        done[qid] = review
    return done


def review_all(
    requests: Sequence[ReviewRequest],
    client: ChatClient,
    output: str | Path,
    overwrite: bool = False,
    record: Mapping[str, Any] | None = None,
    adopt: bool = False,
) -> list[dict[str, Any]]:
    """Reviews of every request, in request order, appending each new one to `output` as soon
    as it arrives. Reviews already in `output` (an earlier or interrupted run) are kept and not
    asked again; `overwrite` starts the file afresh.

    With the judge `record`, the reviews in `output` must have been made under the same record
    (`check_judge_record`; record-less ones only with `adopt`), and `record` is written beside
    `output` only after those reviews passed `finished_reviews`.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        output.write_text("", encoding="utf-8")
    if record is not None:
        check_judge_record(output, record, adopt)
    done = finished_reviews(requests, output)
    if record is not None:
        run_record.write_record(output, record)
    if done:
        logger.info("%s: %d review(s) kept, %d to ask", output, len(done), len(requests) - len(done))
    reviews = []
    with output.open("a", encoding="utf-8") as f:
        for idx, req in enumerate(requests, start=1):
            if req.question_id in done:
                reviews.append(done[req.question_id])
                continue
            text = client.complete(SYSTEM_PROMPT, req.content)
            scores = parse_scores(text)
            if scores is None:
                logger.warning("question %r: judge output has no score pair: %r", req.question_id, text[:200])
            review = {
                "id": idx,
                "question_id": req.question_id,
                "answer1_id": req.answer1_id,
                "answer2_id": req.answer2_id,
                "category": req.category,
                "content": text,
                "tuple": list(scores) if scores else [-1, -1],
            }
            f.write(json.dumps(review, ensure_ascii=False) + "\n")
            f.flush()
            reviews.append(review)
    return reviews


def _review_cmd(args: argparse.Namespace) -> None:
    if not args.base_url:
        raise SystemExit(
            "--base-url is required: the judge has no default endpoint, so the questions and answers go "
            "only where you send them (e.g. --base-url https://api.openai.com/v1 --api-key-env OPENAI_API_KEY)"
        )
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise SystemExit(f"environment variable {args.api_key_env} (--api-key-env) is not set")
    reference_file, model_file = args.answer_list
    check_question_file(model_file, args.question, runners=(FREEFORM_RUNNER,))
    requests = build_requests(
        read_jsonl(args.question),
        read_jsonl(args.context),
        read_jsonl(reference_file),
        read_jsonl(model_file),
        load_rules(args.rule),
    )
    client = ChatClient(
        args.base_url, api_key, args.model, temperature=args.temperature, max_tokens=args.max_tokens
    )
    review_all(
        requests,
        client,
        args.output,
        overwrite=args.overwrite,
        record=judge_record(args),
        adopt=args.adopt_reviews,
    )
    logger.info("wrote %d reviews to %s", len(requests), args.output)


def judge_record(args: argparse.Namespace) -> dict[str, Any]:
    """What the reviews depend on besides the answers: the judge model, its settings, the rule."""
    return {
        "format": JUDGE_FORMAT,
        "model": args.model,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "rule_sha256": file_sha256(args.rule) if args.rule else "built-in",
        "base_url": args.base_url,
    }


def check_judge_record(output: Path, record: Mapping[str, Any], adopt: bool = False) -> None:
    """Refuse to add reviews of judge setup `record` to an `output` holding reviews of another
    setup, or of no recorded setup unless `adopt` (the user's word that they are this judge's).
    Writes nothing."""
    if not output.exists() or not output.stat().st_size:
        return
    previous = run_record.read_record(output, fmt=JUDGE_FORMAT)
    if previous is not None:
        # The endpoint may move (the same model served elsewhere) without changing a review.
        run_record.check_resume(output, previous, record, ignore={"base_url"}, flag="--output")
    elif not adopt:
        raise ValueError(
            f"{output} holds reviews but no judge record ({run_record.record_path(output).name}), so "
            f"nothing tells which judge wrote them; pass --adopt-reviews if they are yours, made by "
            f"{record['model']!r} with these settings, or {_FRESH_START}"
        )
    else:
        logger.warning(
            "%s: adopting its record-less reviews as reviews by %r (--adopt-reviews)", output, record["model"]
        )


def _summarize_cmd(args: argparse.Namespace) -> None:
    if args.results_json and len(args.files) != 1:
        raise SystemExit("--results-json needs exactly one review file")
    expected = None
    if args.question:
        expected = [
            _question_id(q, f"{args.question}: record {i}")
            for i, q in enumerate(read_jsonl(args.question), 1)
        ]
    for path in args.files:
        summary = summarize(read_jsonl(path), path, expected)
        print(Path(path).stem)
        for key, s in summary.items():
            print(key, s.relative, s.reference, s.model)
        overall = summary.get("all")
        write_results_json(
            args.results_json,
            "llavabench",
            overall.relative if overall else None,
            categories={k: v.relative for k, v in summary.items()},
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    review = sub.add_parser("review", help="ask the judge to score the model's answers")
    review.add_argument("-q", "--question", required=True)
    review.add_argument("-c", "--context", required=True)
    review.add_argument(
        "-a", "--answer-list", nargs=2, required=True, metavar=("GPT4_ANSWERS", "MODEL_ANSWERS")
    )
    review.add_argument("-r", "--rule", default=None, help="LLaVA's rule.json; built-in wording when omitted")
    review.add_argument("-o", "--output", required=True)
    review.add_argument(
        "--base-url",
        default=None,
        help="the OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 (required: no default)",
    )
    review.add_argument(
        "--api-key-env",
        default=None,
        help="name of the variable holding the key (none is read or sent without it)",
    )
    review.add_argument("--model", default="gpt-4-0314")
    review.add_argument("--temperature", type=float, default=0.2)
    review.add_argument("--max-tokens", type=int, default=1024)
    review.add_argument(
        "--overwrite", action="store_true", help="review every question afresh instead of resuming"
    )
    review.add_argument(
        "--adopt-reviews",
        action="store_true",
        help="these reviews are yours: keep the reviews of an --output that has no judge record "
        "(made by this --model with these settings) and record them as this judge's",
    )
    review.set_defaults(func=_review_cmd)
    summ = sub.add_parser("summarize", help="relative scores from review files")
    summ.add_argument("-f", "--files", nargs="+", required=True)
    summ.add_argument("-q", "--question", default=None, help="questions.jsonl: every question reviewed once")
    summ.add_argument("--results-json", default=None, help="headline numbers for llava.eval.report")
    summ.set_defaults(func=_summarize_cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
