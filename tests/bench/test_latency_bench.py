"""The latency profile runs end to end on tiny models and reports every stage of every model at
batch 1 and 4 with its conditions (the structure of its output is checked, not its timings)."""

from __future__ import annotations

import json

import pytest

from llava.bench.latency import main

TINY = [
    "--hidden-size",
    "64",
    "--layers",
    "2",
    "--vision-size",
    "32",
    "--image-width",
    "40",
    "--image-height",
    "32",
    "--new-tokens",
    "3",
    "--warmups",
    "1",
    "--repeats",
    "3",
    "--threads",
    "1",
    "--device",
    "cpu",
]
IMAGE_STAGES = {"image_processing", "vision_encoding"}
TEXT_STAGES = {"prefill", "decode"}


def test_latency_profile_reports_every_stage_model_and_batch(capsys):
    result = main([*TINY, "--json"])
    # stdout's last line is the result as JSON (DeepSpeed, imported on the way, may write before it)
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == result
    rows = {(row["model"], row["batch"]): row for row in result["rows"]}
    assert set(rows) == {(model, batch) for model in ("fusion", "baseline", "llm") for batch in (1, 4)}
    for (model, _), row in rows.items():
        expected = TEXT_STAGES | (IMAGE_STAGES if model != "llm" else set())
        assert set(row["stages"]) == expected, model
        for stage in row["stages"].values():
            assert stage["median_ms"] > 0 and stage["iqr_ms"] >= 0
            assert stage["min_ms"] <= stage["median_ms"] <= stage["max_ms"]
        assert row["decode_tokens_per_s"] > 0
    # The plain LLM reads the image's positions as text: every model's prompt is equally long.
    assert len({row["prompt_positions"] for row in rows.values()}) == 1
    conditions = result["conditions"]
    assert conditions["device"] == "cpu" and conditions["dtype"] == "float32"
    assert (conditions["repeats"], conditions["warmups"], conditions["new_tokens"]) == (3, 1, 3)
    assert conditions["environment"]["threads"] == 1
    assert conditions["environment"]["versions"]["torch"]
    assert {name: model["class"] for name, model in conditions["models"].items()} == {
        "fusion": "FusionLlamaForCausalLM",
        "baseline": "LlavaLlamaForCausalLM",
        "llm": "LlamaForCausalLM",
    }
    assert conditions["models"]["fusion"]["image_positions"] == 16  # a 32-px tower, 8-px patches


def test_latency_profile_of_a_given_checkpoint_prints_a_table(tiny_model_path, caplog):
    caplog.set_level("INFO", logger="llava.bench.latency")
    result = main([*TINY, "--checkpoint", f"fusion={tiny_model_path}"])
    assert [(row["model"], row["batch"]) for row in result["rows"]] == [("fusion", 1), ("fusion", 4)]
    assert result["conditions"]["checkpoints"] == {"fusion": tiny_model_path}
    table = caplog.text
    assert "image_processing" in table and "decode tok/s" in table and "load average" in table


def test_latency_profile_refuses_an_unknown_model_name():
    with pytest.raises(SystemExit):
        main([*TINY, "--checkpoint", "vicuna=/tmp/nowhere"])
