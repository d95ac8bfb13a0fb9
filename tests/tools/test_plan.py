"""The memory plan's parameter counts, checked against counts computed here by hand from the
shapes of Vicuna-7B/13B and CLIP-L/336 and the scripts' recipe (LoRA r=128 on every decoder
linear layer outside the fusion layer)."""

from __future__ import annotations

import json

import pytest

from llava.tools.plan import SEQUENCE_LENGTH, activation_bytes, main, memory_plan, trainable_counts

SHAPES = {"vicuna-7b": (4096, 11008, 32), "vicuna-13b": (5120, 13824, 40)}  # hidden, intermediate, layers
D_V = 1024  # CLIP-L/14-336's width; the paper's tower layer -1 (Inverse-LLaVA) or -2 (LLaVA-1.5)
R = 128


def _lora_per_layer(h: int, i: int) -> int:
    # q, k, v, o: h -> h; gate, up: h -> i; down: i -> h; LoRA adds r x (in + out) to each
    return R * (4 * (h + h) + 2 * (h + i) + (i + h))


@pytest.mark.parametrize("llm", sorted(SHAPES))
def test_trainable_counts_equal_the_hand_computed_ones(llm):
    h, i, layers = SHAPES[llm]
    fusion, total_fusion, _ = trainable_counts("fusion_llama", llm)
    # the paper's concat layer in layer 0 on q, k, v (each h wide): W_t2v (d_v x h), the stacked
    # A and B halves of W_concat (3h x d_v each), one alpha per target
    assert fusion == {
        "lora": (layers - 1) * _lora_per_layer(h, i),
        "fusion": D_V * h + 2 * (3 * h) * D_V + 3,
        "projector": 0,
    }
    baseline, total_baseline, _ = trainable_counts("llava_llama", llm)
    # mlp2x_gelu: d_v -> h -> h, with biases
    assert baseline == {"lora": layers * _lora_per_layer(h, i), "projector": D_V * h + h + h * h + h}
    assert total_baseline - baseline["projector"] - baseline["lora"] == total_fusion - sum(fusion.values())


def test_memory_terms_follow_zero_stage_and_checkpointing():
    counts, total, config = trainable_counts("fusion_llama", "vicuna-7b")
    trainable = sum(counts.values())
    zero2 = memory_plan("fusion_llama", config, trainable, total, 8, 2, True)
    zero3 = memory_plan("fusion_llama", config, trainable, total, 8, 3, True)
    assert zero2.weights == pytest.approx(2 * total / 1024**3)  # bf16 weights, replicated
    assert zero3.weights == pytest.approx(zero2.weights / 8)  # partitioned over 8 GPUs
    assert zero2.optimizer == zero3.optimizer == pytest.approx(12 * trainable / 8 / 1024**3)
    assert zero2.logits == pytest.approx(32 * SEQUENCE_LENGTH * 32000 * 6 / 1024**3)
    stored = activation_bytes(config, 32, SEQUENCE_LENGTH, True, 31)
    full = activation_bytes(config, 32, SEQUENCE_LENGTH, False, 31)
    assert full > 10 * stored  # checkpointing keeps one layer input per layer
    assert stored == 2 * 32 * SEQUENCE_LENGTH * (32 * 4096 + 10 * 4096 + 4 * 11008 + 6 * 4096 + 11008)


def test_json_output_has_the_documented_keys(capsys):
    main(["--model", "vicuna-7b", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert set(result["fusion_llama"]) == {"lora", "fusion", "projector"}
    assert set(result["llava_llama"]) == {"lora", "projector"}
    settings = result["memory_gib"]["fusion_llama"]
    assert set(settings) == {f"zero{z}_{c}" for z in (2, 3) for c in ("checkpointing", "no_checkpointing")}
    assert settings["zero3_checkpointing"]["total"] < settings["zero2_checkpointing"]["total"]
