"""LLaVA-Bench (in-the-wild) judge: a GPT-4-style reviewer behind any OpenAI-compatible endpoint,
and the relative-score summariser.

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (LLaVA-Bench) and
LLaVA's `llava/eval/eval_gpt_review_bench.py` / `summarize_gpt_review.py`: the judge sees the
image context (captions), the question, answer 1 (GPT-4's reference) and answer 2 (the model),
and writes two 1-10 scores on its first line. Relative score = 100 * mean(model) / mean(GPT-4)
per category. The built-in instruction is our wording of the same request; for numbers
comparable with published ones pass LLaVA's `rule.json` with `--rule`.

    python -m llava.eval.judge review --question questions.jsonl --context context.jsonl \
        --answer-list answers_gpt4.jsonl answers/model.jsonl --output reviews/model.jsonl \
        --base-url https://api.openai.com/v1 --api-key-env OPENAI_API_KEY --model gpt-4-0314
    python -m llava.eval.judge summarize -f reviews/model.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.eval.scoring_io import field, read_json, read_jsonl, write_results_json

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = "You are a helpful and precise assistant that checks the quality of answers."
CATEGORY_PREFIX = "llava_bench_"
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
_RETRIABLE_HTTP = frozenset({408, 409, 429, 500, 502, 503, 504})


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


def _by_question_id(records: Sequence[Mapping[str, Any]], source: str) -> dict[Any, Mapping[str, Any]]:
    return {field(r, "question_id", f"{source}: record {i}"): r for i, r in enumerate(records, start=1)}


def build_requests(
    questions: Sequence[Mapping[str, Any]],
    contexts: Sequence[Mapping[str, Any]],
    reference_answers: Sequence[Mapping[str, Any]],
    model_answers: Sequence[Mapping[str, Any]],
    rules: Mapping[str, Rule],
) -> list[ReviewRequest]:
    """One review per question; answers are joined by question_id, contexts by image."""
    captions = {field(c, "image", "context"): c.get("caption", "") for c in contexts}
    refs = _by_question_id(reference_answers, "reference answers")
    preds = _by_question_id(model_answers, "model answers")
    requests = []
    for i, q in enumerate(questions, start=1):
        where = f"questions: record {i}"
        qid, image = field(q, "question_id", where), field(q, "image", where)
        category = CATEGORY_PREFIX + field(q, "category", where)
        if image not in captions:
            raise ValueError(f"{where}: the context file has no caption for image {image!r}")
        for name, answers in (("reference", refs), ("model", preds)):
            if qid not in answers:
                raise ValueError(f"{where}: the {name} answers have no question_id {qid!r}")
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


def parse_scores(review: str) -> tuple[float, float] | None:
    """The two scores on the review's first line ("8 7", "8, 7"); None when unreadable."""
    first_line = review.split("\n", 1)[0].replace(",", " ")
    parts = first_line.split()
    if len(parts) != 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None


class ChatClient:
    """Minimal OpenAI-compatible `/chat/completions` client on urllib (no extra dependency)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        temperature: float = 0.2,
        max_tokens: int = 1024,
        timeout: float = 120.0,
        max_retries: int = 3,
        retry_wait: float = 5.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_wait = retry_wait

    def _request(self, system: str, user: str) -> urllib.request.Request:
        payload = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
        )

    def complete(self, system: str, user: str) -> str:
        for attempt in range(self.max_retries + 1):
            try:
                with urllib.request.urlopen(self._request(system, user), timeout=self.timeout) as resp:
                    body = json.loads(resp.read().decode("utf-8"))
                return body["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as err:
                if err.code not in _RETRIABLE_HTTP or attempt == self.max_retries:
                    detail = err.read().decode("utf-8", "replace")[:500]
                    raise RuntimeError(f"{self.url}: HTTP {err.code}: {detail}") from err
                logger.warning("%s: HTTP %d, retry %d/%d", self.url, err.code, attempt + 1, self.max_retries)
            except urllib.error.URLError as err:
                if attempt == self.max_retries:
                    raise RuntimeError(f"{self.url}: {err.reason}") from err
                logger.warning("%s: %s, retry %d/%d", self.url, err.reason, attempt + 1, self.max_retries)
            time.sleep(self.retry_wait * (attempt + 1))
        raise AssertionError("unreachable: the last attempt returns or raises")


def review_all(
    requests: Sequence[ReviewRequest], client: ChatClient, output: str | Path
) -> list[dict[str, Any]]:
    """Ask the judge for every request, appending one review per line to `output`."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    reviews = []
    with output.open("w", encoding="utf-8") as f:
        for idx, req in enumerate(requests, start=1):
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


@dataclass(frozen=True)
class CategorySummary:
    relative: float
    reference: float
    model: float
    count: int


def summarize(reviews: Sequence[Mapping[str, Any]]) -> dict[str, CategorySummary]:
    """Per category and "all": relative score and the x10 mean scores of GPT-4 and the model.

    As in LLaVA's summariser, the means are rounded to 3 decimals before the ratio. Reviews
    whose scores could not be parsed ([-1, -1]) are left out and logged, rather than averaged in.
    """
    pairs: dict[str, list[tuple[float, float]]] = {}
    failed = 0
    for i, review in enumerate(reviews, start=1):
        ref, model = field(review, "tuple", f"reviews: record {i}")
        if ref < 0 or model < 0:
            failed += 1
            continue
        category = str(review.get("category", "all")).removeprefix(CATEGORY_PREFIX)
        for key in {category, "all"}:
            pairs.setdefault(key, []).append((float(ref), float(model)))
    if failed:
        logger.warning("%d reviews without a score pair were left out", failed)
    summary = {}
    for key, values in sorted(pairs.items()):
        mean_ref = round(sum(r for r, _ in values) / len(values), 3)
        mean_model = round(sum(m for _, m in values) / len(values), 3)
        relative = 100.0 * mean_model / mean_ref if mean_ref else 0.0
        summary[key] = CategorySummary(
            round(relative, 1), round(mean_ref * 10, 1), round(mean_model * 10, 1), len(values)
        )
    return summary


def _review_cmd(args: argparse.Namespace) -> None:
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise SystemExit(f"environment variable {args.api_key_env} is not set")
    reference_file, model_file = args.answer_list
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
    review_all(requests, client, args.output)
    logger.info("wrote %d reviews to %s", len(requests), args.output)


def _summarize_cmd(args: argparse.Namespace) -> None:
    if args.results_json and len(args.files) != 1:
        raise SystemExit("--results-json needs exactly one review file")
    for path in args.files:
        summary = summarize(read_jsonl(path))
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
    review.add_argument("--base-url", default="https://api.openai.com/v1")
    review.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="name of the variable holding the key"
    )
    review.add_argument("--model", default="gpt-4-0314")
    review.add_argument("--temperature", type=float, default=0.2)
    review.add_argument("--max-tokens", type=int, default=1024)
    review.set_defaults(func=_review_cmd)
    summ = sub.add_parser("summarize", help="relative scores from review files")
    summ.add_argument("-f", "--files", nargs="+", required=True)
    summ.add_argument("--results-json", default=None, help="headline numbers for llava.eval.report")
    summ.set_defaults(func=_summarize_cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
