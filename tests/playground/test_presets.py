"""The playground's presets: budgets derive what they do not set, and name what exists."""

from __future__ import annotations

import dataclasses
import math

import pytest

from llava.playground.datasets import DataSizes
from llava.playground.presets import LLAVA_ALIGN_BATCH, LLAVA_ALIGN_LR, PIPELINES, PRESETS, Budget, get_preset


def _budget(**overrides) -> Budget:
    fields = dict(steps=10, batch_size=32, learning_rate=1e-3, lora_r=4, lora_alpha=8, projector_lr=1e-3,
                  align_steps=2)  # fmt: skip
    return Budget(**{**fields, **overrides})


def test_alignment_rate_is_llavas_square_root_scaled_to_the_batch_unless_given():
    assert _budget(batch_size=256).alignment_rate == pytest.approx(LLAVA_ALIGN_LR)
    assert _budget(batch_size=32).alignment_rate == pytest.approx(1e-3 * math.sqrt(32 / LLAVA_ALIGN_BATCH))
    assert _budget(batch_size=16).alignment_rate == pytest.approx(2.5e-4)
    assert _budget(align_learning_rate=7e-4).alignment_rate == 7e-4
    # A copy with another batch size moves a derived rate and keeps a given one.
    assert dataclasses.replace(_budget(batch_size=16), batch_size=64).alignment_rate == pytest.approx(5e-4)
    assert dataclasses.replace(_budget(align_learning_rate=7e-4), batch_size=64).alignment_rate == 7e-4


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_name_existing_data_and_pipelines(name):
    preset = get_preset(name)
    assert isinstance(preset.data, DataSizes) and set(preset.pipelines) <= set(PIPELINES) and preset.seeds


def test_unknown_preset_is_named_in_the_error():
    with pytest.raises(ValueError, match="'fast'"):
        get_preset("fast")


def test_wsd_decays_over_its_share_of_the_steps_and_bad_schedules_are_named():
    assert _budget(steps=800, schedule="wsd").decay_steps == 160
    assert _budget(steps=4, schedule="wsd").decay_steps == 1  # never an empty decay
    assert _budget(steps=100, schedule="wsd", decay_ratio=0.5).decay_steps == 50
    with pytest.raises(ValueError, match="'linear'"):
        _budget(schedule="linear")
    with pytest.raises(ValueError, match="decay_ratio must be in"):
        _budget(decay_ratio=0.0)


def test_pipelines_are_typed_and_their_argv_is_built_from_the_fields(tmp_path):
    from llava.playground.datasets import PlaygroundData
    from llava.playground.presets import Pipeline
    from llava.playground.run import train_argv

    def flags(name: str, stage: int = -1) -> dict[str, str]:
        pipeline, preset = PIPELINES[name], get_preset("quick")
        train = pipeline.train_stages(preset.budget)[stage]
        argv = train_argv(
            preset, PlaygroundData.at(tmp_path), pipeline, train, (tmp_path, tmp_path), tmp_path, 0, None
        )
        assert len(argv) == 2 * len(set(argv[::2]))  # every flag once
        return dict(zip(argv[::2], argv[1::2], strict=True))

    multi = flags("ablation_multi_layer")
    assert multi["--layer_ids_to_inject"] == multi["--lora_layer_ids_to_skip"] == "0,2"
    assert "--mm_projector_lr" not in multi and multi["--model_type"] == "fusion_llama"
    assert flags("inverse_llava_hd")["--mm_vision_select_layer"] == "-1,-2"
    assert flags("ablation_gated")["--fusion_variant"] == "gated" and "--fusion_variant" not in flags(
        "inverse_llava"
    )
    # the projector's rate goes with the projector, not with a flag's spelling
    assert flags("llava_no_align")["--mm_projector_lr"] == "0.001" and "--fusion_dropout" not in flags(
        "llava_1_5"
    )
    align = flags("llava_1_5", 0)
    assert align["--tune_mm_mlp_adapter"] == "True" and align["--version"] == "plain"
    assert "--lora_enable" not in align and align["--learning_rate"] == "0.00025"
    with pytest.raises(ValueError, match="Pipeline x: only a projector model"):
        Pipeline("x", "X", "fusion_llama", align=True)
    with pytest.raises(ValueError, match="Pipeline y: unknown model_type 'llama'"):
        Pipeline("y", "Y", "llama")
    with pytest.raises(ValueError, match="Preset z: unknown pipelines \\['nope'\\]"):
        dataclasses.replace(get_preset("smoke"), name="z", pipelines=("nope",))
