"""Streaming's cost per token against the answer's length: the server's path (`BatchStreamer`'s
`IncrementalDetokenizer` + `TextDeltas`) next to re-decoding the whole answer at every token (what
a streamer that decodes `ids[:k]` does, quadratic in the length).

    python -m llava.bench.streaming [--json] [--lengths 256,1024,4096] [--tokenizer DIR]

The tokens are a real tokenizer's ids of English text with punctuation and accented characters
(default: the playground's shipped chat LM tokenizer), fed one at a time as `generate` feeds a
streamer, with a stop string that never occurs (so every token runs the stop check). Both paths
are timed in one run; the result lists the conditions.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from transformers import AutoTokenizer

from llava.environment import describe_environment
from llava.inference.streaming import IncrementalDetokenizer, TextDeltas

logger = logging.getLogger(__name__)

SHIPPED_TOKENIZER = Path(__file__).resolve().parents[2] / "playground" / "backbones" / "llm"
TEXT = (
    "The red circle is at the top left, and the digit 3 is at the bottom right. "
    "There are more circles than squares; the café's naïve blue square sits above it. "
)
STOP = ("###",)


def answer_ids(tokenizer, length: int) -> list[int]:
    """`length` token ids of `TEXT` repeated."""
    ids = tokenizer(TEXT, add_special_tokens=False).input_ids
    return (ids * (length // len(ids) + 1))[:length]


def time_incremental(tokenizer, ids: list[int]) -> tuple[float, str]:
    """Seconds for streaming `ids` through the server's path, and the streamed text."""
    decoder, deltas, pieces = IncrementalDetokenizer(tokenizer), TextDeltas(STOP), []
    start = time.perf_counter()
    for token in ids:
        pieces.append(deltas.push(decoder.push(token)))
    return time.perf_counter() - start, "".join(pieces)


def time_redecoding(tokenizer, ids: list[int]) -> float:
    """Seconds for decoding `ids[:k]` at every k (the quadratic baseline)."""
    start = time.perf_counter()
    for k in range(1, len(ids) + 1):
        tokenizer.decode(ids[:k], skip_special_tokens=True)
    return time.perf_counter() - start


def run(tokenizer_dir: Path, lengths: list[int]) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    time_incremental(tokenizer, answer_ids(tokenizer, 64))  # warm-up
    rows = []
    for length in lengths:
        ids = answer_ids(tokenizer, length)
        incremental, text = time_incremental(tokenizer, ids)
        if text != tokenizer.decode(ids, skip_special_tokens=True).strip():
            raise AssertionError(f"streamed text differs from the decoded answer at {length} tokens")
        redecoding = time_redecoding(tokenizer, ids)
        rows.append(
            {
                "tokens": length,
                "incremental_us_per_token": 1e6 * incremental / length,
                "redecoding_us_per_token": 1e6 * redecoding / length,
            }
        )
    first, last = rows[0], rows[-1]
    return {
        "rows": rows,
        # per-token cost at the longest answer over the shortest: 1.0 is flat (linear in total)
        "incremental_growth": last["incremental_us_per_token"] / first["incremental_us_per_token"],
        "redecoding_growth": last["redecoding_us_per_token"] / first["redecoding_us_per_token"],
        "conditions": {"tokenizer": str(tokenizer_dir), "vocab": len(tokenizer), **describe_environment()},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--lengths", default="256,1024,4096", help="answer lengths in tokens (default: %(default)s)"
    )
    parser.add_argument("--tokenizer", type=Path, default=SHIPPED_TOKENIZER, help="a tokenizer folder")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run(args.tokenizer, [int(n) for n in args.lengths.split(",")])
    if args.json:
        print(json.dumps(result))
        return result
    for row in result["rows"]:
        logger.info(
            "%5d tokens: incremental %.1f us/token, re-decoding %.1f us/token",
            row["tokens"],
            row["incremental_us_per_token"],
            row["redecoding_us_per_token"],
        )
    logger.info(
        "per-token cost, longest / shortest answer: incremental %.2fx, re-decoding %.2fx",
        result["incremental_growth"],
        result["redecoding_growth"],
    )
    logger.info("conditions: %s", result["conditions"])
    return result


if __name__ == "__main__":
    main()
