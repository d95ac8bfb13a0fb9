"""Every checkpoint training saves carries a model card: what it is, the command, the variant,
the base models and how to load it."""

from __future__ import annotations

import shlex

from llava.data.toy import image_record, write_dataset
from llava.train.merge import merge_lora
from llava.train.train import main

FUSION = ["--model_type", "fusion_llama", "--fusion_variant", "gated", "--mm_vision_select_layer", "-1"]
STAGE_1 = ["--model_type", "llava_llama", "--tune_mm_mlp_adapter", "True", "--mm_vision_select_layer", "-2"]


def _header(card: str) -> dict[str, str]:
    lines = card.split("---\n")[1].strip().splitlines()
    return dict(line.split(": ", 1) for line in lines)


def test_lora_run_and_its_checkpoints_carry_a_card(run_flags, tiny_checkpoints, tmp_path):
    llm, vision = tiny_checkpoints
    argv = run_flags(tmp_path / "run", *FUSION, "--max_steps", "2", "--save_steps", "1")
    main(argv)
    for folder in (tmp_path / "run", tmp_path / "run" / "checkpoint-1"):
        card = (folder / "README.md").read_text()
        assert _header(card) == {
            "base_model": llm,
            "library_name": "peft",
            "pipeline_tag": "image-text-to-text",
            "tags": "[llava, inverse-llava, vision-language]",
        }
        assert "the `gated` fusion layer on q/k/v of LLM layer(s) [0]" in card
        assert f"- LLM: `{llm}`" in card and f"- vision tower: `{vision}` (frozen)" in card
        assert shlex.join(["python", "-m", "llava.train.train", *argv]) in card
        assert f'load_pretrained_model("PATH", "{llm}")' in card
        assert "- `non_lora_trainables.safetensors`" in card and "- `adapter_model.safetensors`" in card

    merged = merge_lora(str(tmp_path / "run"), llm, str(tmp_path / "merged"))
    card = (merged / "README.md").read_text()
    assert _header(card)["library_name"] == "transformers" and "A complete model of Inverse-LLaVA" in card
    assert "scripts/merge_lora_weights.py --model-path" in card and 'load_pretrained_model("PATH")' in card


def test_stage_1_run_card_names_the_projector(run_flags, tmp_path):
    colours = ["red", "green", "blue"]  # LCS-558K-like captions: one image, one answer
    records = [image_record(i, c, f"{i}.png") for i, c in enumerate(colours)]
    captions = write_dataset(tmp_path / "captions", records, {f"{i}.png": c for i, c in enumerate(colours)})
    main(
        run_flags(tmp_path / "run", *STAGE_1, "--max_steps", "1", data=captions, lora=False, version="plain")
    )
    card = (tmp_path / "run" / "README.md").read_text()
    assert "A stage-1 run: the projector alone of the LLaVA-1.5 baseline (`llava_llama`)" in card
    assert "- `mm_projector.safetensors`" in card
