"""The playground's smoke preset end to end: stages, caching, resume, report."""

from __future__ import annotations

import dataclasses
import json

import pytest
from transformers import CLIPVisionConfig, LlamaConfig

from llava.playground.__main__ import main
from llava.playground.backbones import SHIPPED_BACKBONES
from llava.playground.presets import MAIN_PIPELINES, PIPELINES, get_preset
from llava.playground.run import run as run_playground
from llava.playground.stages import DONE
from llava.playground.tasks import CATEGORIES
from llava.tools.tokenizer import train_tokenizer


def test_smoke_preset_runs_end_to_end_then_resumes(tmp_path, caplog):
    out = tmp_path / "smoke"
    results = main(["run", "--preset", "smoke", "--output-dir", str(out)])

    assert [run["pipeline"] for run in results["runs"]] == list(MAIN_PIPELINES)
    report = (out / "report.md").read_text()
    for run in results["runs"]:
        assert run["label"] in report
        assert set(run["eval"]["scores"]["mme"]) == set(CATEGORIES)
        assert set(run["eval"]["scores"]["vqa"]) == set(CATEGORIES)
        for stage in run["stages"]:
            assert stage["command"] in report and stage["command"].startswith("python -m llava.train.train ")
            if not stage["align"]:  # the preset's budget; length-sorted batches; warmup-stable-decay
                assert "--lora_dropout 0.0 " in stage["command"]
                assert "--train_sampling_strategy group_by_length" in stage["command"]
                assert "--lr_scheduler_type warmup_stable_decay" in stage["command"]
                assert """--lr_scheduler_kwargs '{"num_decay_steps": 1}'""" in stage["command"]
            else:
                assert "--lr_scheduler_type cosine" in stage["command"]
        assert any(c.startswith("python -m llava.eval.model_vqa_loader ") for c in run["eval"]["commands"])
    for category in CATEGORIES:
        row = next(line for line in report.splitlines() if line.startswith(f"| {category} | 75 |"))
        assert row.count(", p ") == len(MAIN_PIPELINES)  # every MME cell says how likely by guessing
    llava = next(r for r in results["runs"] if r["pipeline"] == "llava_1_5")
    assert [s["align"] for s in llava["stages"]] == [True, False]  # two stages; the others one
    assert (out / "llava_1_5" / "seed0" / "align" / "mm_projector.safetensors").is_file()
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert json.loads((out / "results.json").read_text())["preset"] == "smoke"

    # An interrupted stage (a directory without its DONE marker) restarts from scratch; finished ones are skipped.
    interrupted = out / "llava_no_align" / "seed0" / "eval"
    (interrupted / DONE).unlink()
    (interrupted / "partial.jsonl").write_text("{half a line")
    caplog.clear()
    caplog.set_level("INFO")
    again = main(["run", "--preset", "smoke", "--output-dir", str(out)])
    assert not (interrupted / "partial.jsonl").exists() and (interrupted / DONE).is_file()
    skipped = [
        r.message for r in caplog.records if r.message.endswith("done earlier") or "skipped" in r.message
    ]
    stages = sum(PIPELINES[p].align + 2 for p in MAIN_PIPELINES) + 1  # training stages and eval each, data
    assert len(skipped) == stages - 1  # all but the interrupted eval
    assert "removing the output of an interrupted run" in caplog.text
    first = {r["pipeline"]: r["stages"] for r in results["runs"]}
    # Training records are reused as they were.
    assert {r["pipeline"]: r["stages"] for r in again["runs"]} == first

    # A stage finished under other settings (here: another step budget) is refused, not reused.
    smoke = get_preset("smoke")
    longer = dataclasses.replace(
        smoke, budget=dataclasses.replace(smoke.budget, steps=smoke.budget.steps + 1)
    )
    with pytest.raises(
        FileExistsError, match="inverse_llava/seed0/finetune holds a stage run with other settings"
    ):
        run_playground(longer, out, SHIPPED_BACKBONES)

    # ... and so is one trained under other CPU kernels (they add floats in another order).
    done = out / "inverse_llava" / "seed0" / "finetune" / DONE
    record = json.loads(done.read_text())
    assert record["settings"]["cpu_capability"] == results["runs"][0]["environment"]["cpu_capability"]
    done.write_text(json.dumps(record | {"settings": record["settings"] | {"cpu_capability": "OTHER"}}))
    with pytest.raises(FileExistsError, match="'cpu_capability': 'OTHER'"):
        run_playground(smoke, out, SHIPPED_BACKBONES)


def test_backbones_built_for_another_scene_text_are_refused(tmp_path):
    backbones = tmp_path / "backbones"
    LlamaConfig().save_pretrained(backbones / "llm")
    CLIPVisionConfig().save_pretrained(backbones / "vision")
    train_tokenizer(["toprightdigit 7. a red circle"], vocab_size=300).save_pretrained(backbones / "llm")
    with pytest.raises(
        ValueError,
        match=r"scene word 'topleftredcircle' is not one token of the chat LM's tokenizer in .*llm",
    ):
        run_playground(get_preset("smoke"), tmp_path / "run", backbones_dir=backbones)
    assert not (tmp_path / "run" / "data").exists()  # refused before any stage ran
