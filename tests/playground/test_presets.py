"""The playground's presets: budgets derive what they do not set, and name what exists."""

from __future__ import annotations

import dataclasses
import math

import pytest

from llava.playground.datasets import PRESETS as DATA_PRESETS
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
    assert preset.data in DATA_PRESETS and set(preset.pipelines) <= set(PIPELINES) and preset.seeds


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
