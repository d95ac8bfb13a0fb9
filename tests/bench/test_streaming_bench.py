"""`python -m llava.bench.streaming`: streams real ids through the server's path, checks the text
against decoding the whole answer, and reports both paths' cost per token with its conditions."""

from __future__ import annotations

from llava.bench import streaming


def test_streaming_bench_reports_both_paths_per_length():
    result = streaming.main(["--lengths", "32,128", "--json"])
    assert [row["tokens"] for row in result["rows"]] == [32, 128]
    for row in result["rows"]:
        assert row["incremental_us_per_token"] > 0 and row["redecoding_us_per_token"] > 0
    assert {"incremental_growth", "redecoding_growth"} <= set(result)
    assert result["conditions"]["vocab"] == 410 and result["conditions"]["cpu_capability"]


def test_answer_ids_repeat_the_text_to_the_length():
    tokenizer = streaming.AutoTokenizer.from_pretrained(streaming.SHIPPED_TOKENIZER)
    ids = streaming.answer_ids(tokenizer, 300)
    assert len(ids) == 300 and tokenizer.decode(ids).startswith(streaming.TEXT.strip()[:40])
