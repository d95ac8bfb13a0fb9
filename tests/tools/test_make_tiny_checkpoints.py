"""`python -m llava.tools.make_tiny_checkpoints --legacy-prefix`: backbones whose LLaVA-1.5
baseline exports to llava-hf without `--allow-prompt-mismatch`."""

from __future__ import annotations

from transformers import AutoTokenizer, LlavaForConditionalGeneration

from llava.model.builder import build_from_backbones
from llava.model.vision_tower import load_image_processor
from llava.tools.export_llava_hf import export_llava_hf
from llava.tools.make_tiny_checkpoints import main


def test_legacy_prefix_backbones_export_without_allowing_a_prompt_mismatch(tmp_path):
    main(["--output-dir", str(tmp_path / "tiny"), "--legacy-prefix"])
    llm, vision = str(tmp_path / "tiny" / "llm"), str(tmp_path / "tiny" / "vision")
    model, _ = build_from_backbones("llava_llama", llm, vision)
    checkpoint = tmp_path / "ckpt"
    model.save_pretrained(checkpoint)
    AutoTokenizer.from_pretrained(llm).save_pretrained(checkpoint)
    load_image_processor(vision).save_pretrained(checkpoint)

    out = export_llava_hf(str(checkpoint), tmp_path / "hf")

    assert isinstance(LlavaForConditionalGeneration.from_pretrained(out), LlavaForConditionalGeneration)
