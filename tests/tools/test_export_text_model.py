"""`python -m llava.tools.export_text_model` writes a plain causal LM of the LLM's family that
transformers loads alone, and whose logits on text-only prompts are the multimodal model's: every
fusion variant with an affine text term on every family (a LoRA run with its adapter merged, the
baseline's LLM as it is); the others are refused with one line naming the variant or family."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from llava.cli_errors import DEBUG_ENV
from llava.model.builder import build_from_backbones, load_pretrained_model
from llava.model.families import FAMILIES
from llava.tools.export_text_model import ExportRefusedError, main
from llava.tools.text_path import TextPathError
from tests import tolerances
from tests.tools.text_export_helpers import fold_tolerance, fusion_checkpoint, text_logits
from tests.train.train_helpers import SUBPROCESS_ENV, run_training

REPO = Path(__file__).resolve().parents[2]
# Every variant whose text term is affine, each on another family: linear terms fold into the
# q/k/v weights, constant ones (mlp, release_mlp) into biases (Qwen2's own, `attention_bias`
# on Llama and Gemma).
CASES = [
    ("concat", "llama"),
    ("add", "qwen3"),
    ("mlp", "gemma"),
    ("release_mlp", "llama"),
    ("release_stable", "mistral"),
    ("published", "qwen2"),
]


def _export(model_path: Path | str, out: Path, *flags: str) -> Path:
    main(["--model-path", str(model_path), "--output-dir", str(out), *flags])
    return out


def _assert_plain_folder(out: Path, family: str):
    """A folder of the family's own format, loaded by transformers without this package's
    classes, holding none of the multimodal model's tensors."""
    config = json.loads((out / "config.json").read_text())
    causal_lm = FAMILIES[family].causal_lm_cls
    assert config["model_type"] == family and config["architectures"] == [causal_lm.__name__]
    assert {"model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    assert not [k for k in load_file(out / "model.safetensors") if "fusion" in k or "vision" in k]
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(exported) is causal_lm
    return exported


@pytest.mark.parametrize(("variant", "family"), CASES)
def test_the_export_computes_the_fused_models_text_path(variant, family, tiny_backbones, tmp_path):
    backbones = tiny_backbones(family)
    checkpoint = fusion_checkpoint(
        tmp_path / "ckpt", backbones, fusion_variant=variant, fusion_layer_ids=[0, 2]
    )
    exported = _assert_plain_folder(_export(checkpoint, tmp_path / "text"), family)
    tokenizer, fused, _, _ = load_pretrained_model(str(checkpoint), device="cpu")
    expected = text_logits(fused, tokenizer)
    tolerance = fold_tolerance(expected, exported.config, fused.config.mm_hidden_size)
    assert (text_logits(exported, tokenizer) - expected).abs().max().item() <= tolerance
    if variant in ("mlp", "release_mlp"):  # a constant term: biases switched on, o_proj's zero
        assert exported.config.attention_bias and not exported.model.layers[1].self_attn.o_proj.bias.any()
    # The fold matters at this precision: the LLM alone is far off.
    base = AutoModelForCausalLM.from_pretrained(backbones[0]).eval()
    assert (text_logits(base, tokenizer) - expected).abs().max().item() > 100 * tolerance


def test_a_lora_run_exports_with_its_adapter_merged(tiny_backbones, toy_dataset, tmp_path):
    """A real LoRA run of the published layer on Qwen2 (adapter + non-LoRA trainables, needing
    --model-base): the export merges the adapter into layers 1-3 and folds the trained fusion
    layer 0."""
    llm, vision = tiny_backbones("qwen2")
    data, images = toy_dataset
    flags = {
        "model_name_or_path": llm,
        "vision_tower": vision,
        "version": "qwen_2",
        "data_path": data,
        "image_folder": images,
        "output_dir": str(tmp_path / "run"),
        "model_type": "fusion_llama",
        "fusion_variant": "published",
        "lora_enable": "True",
        "lora_r": "8",
        "lora_alpha": "16",
        "per_device_train_batch_size": "4",
        "learning_rate": "2e-3",
        "fusion_lr": "1e-2",
        "max_steps": "3",
        "model_max_length": "128",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": "True",
        "seed": "0",
    }
    summary, _ = run_training([item for name, value in flags.items() for item in (f"--{name}", value)])
    assert set(summary["trained_groups"]) == {"lora", "fusion"}
    with pytest.raises(ValueError, match="--model-base"):
        _export(tmp_path / "run", tmp_path / "refused")
    exported = _assert_plain_folder(
        _export(tmp_path / "run", tmp_path / "text", "--model-base", llm), "qwen2"
    )

    tokenizer, fused, _, _ = load_pretrained_model(str(tmp_path / "run"), llm, device="cpu")
    expected = text_logits(fused, tokenizer)
    tolerance = fold_tolerance(expected, exported.config, fused.config.mm_hidden_size)
    assert (text_logits(exported, tokenizer) - expected).abs().max().item() <= tolerance
    base = AutoModelForCausalLM.from_pretrained(llm).state_dict()
    weights = exported.state_dict()
    for layer in (0, 1):  # 0: the fusion layer (folded, no LoRA); 1: LoRA merged
        name = f"model.layers.{layer}.self_attn.q_proj.weight"
        assert not torch.allclose(weights[name], base[name])
    # The trained fold matters at this precision: without the fusion term the logits move.
    with torch.no_grad():
        for scale in fused.model.layers[0].self_attn.fusion.scales.parameters():
            scale.zero_()
    assert (text_logits(fused, tokenizer) - expected).abs().max().item() > 100 * tolerance


def test_the_baselines_text_path_is_its_llm(tiny_backbones, tmp_path):
    llm, vision = tiny_backbones("qwen2")
    model, _ = build_from_backbones("llava_llama", llm, vision)
    model.save_pretrained(tmp_path / "ckpt")
    AutoTokenizer.from_pretrained(llm).save_pretrained(tmp_path / "ckpt")
    exported = _assert_plain_folder(_export(tmp_path / "ckpt", tmp_path / "text"), "qwen2")
    tokenizer, loaded, _, _ = load_pretrained_model(str(tmp_path / "ckpt"), device="cpu")
    # The same weights through the same library code: equal, not merely close.
    assert torch.equal(text_logits(exported, tokenizer), text_logits(loaded, tokenizer))


def test_a_bfloat16_export_is_within_bfloat16_rounding(tiny_backbones, tmp_path):
    backbones = tiny_backbones("qwen2")
    checkpoint = fusion_checkpoint(tmp_path / "ckpt", backbones, fusion_variant="published")
    exported = _assert_plain_folder(_export(checkpoint, tmp_path / "text", "--dtype", "bfloat16"), "qwen2")
    assert exported.dtype == torch.bfloat16
    tokenizer, fused, _, _ = load_pretrained_model(str(checkpoint), device="cpu")
    expected = text_logits(fused, tokenizer)
    got = text_logits(exported, tokenizer).float()
    _, depth = tolerances.network(exported.config)
    # Every contraction of the export reads bfloat16 weights and rounds to bfloat16; the
    # fold's rounding of W + s A M to bfloat16 is one of those roundings.
    bound = tolerances.low_precision(torch.bfloat16, depth, expected.square().mean().sqrt().item())
    assert (got - expected).abs().max().item() <= bound


@pytest.mark.parametrize(
    ("family", "variant", "error", "names"),
    [
        ("llama", "gated", TextPathError, "fusion_variant 'gated'"),
        ("mistral", "mlp", TextPathError, "Mistral's q/k/v projections have no bias"),
    ],
)
def test_a_text_path_no_plain_model_computes_is_refused(
    family, variant, error, names, tiny_backbones, tmp_path
):
    checkpoint = fusion_checkpoint(tmp_path / "ckpt", tiny_backbones(family), fusion_variant=variant)
    with pytest.raises(error, match=names):
        _export(checkpoint, tmp_path / "text")
    assert not (tmp_path / "text").exists()


def test_a_used_output_dir_and_a_plain_llm_are_refused(tiny_backbones, tmp_path):
    llm, _ = tiny_backbones("llama")
    used = tmp_path / "used"
    used.mkdir()
    (used / "config.json").write_text("{}")
    with pytest.raises(ExportRefusedError, match=f"--output-dir {used} is not empty"):
        _export(llm, used)
    with pytest.raises(ExportRefusedError, match="LlamaForCausalLM is not a multimodal model"):
        _export(llm, tmp_path / "text")


def test_the_command_ends_a_refusal_on_one_line(tiny_backbones, tmp_path):
    checkpoint = fusion_checkpoint(tmp_path / "ckpt", tiny_backbones("llama"), fusion_variant="gated")
    env = {k: v for k, v in SUBPROCESS_ENV.items() if k != DEBUG_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "llava.tools.export_text_model", "--model-path", str(checkpoint)]
        + ["--output-dir", str(tmp_path / "text")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "fusion_variant 'gated'" in proc.stderr.strip().splitlines()[-1]
