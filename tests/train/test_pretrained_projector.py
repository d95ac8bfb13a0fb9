"""`--pretrain_mm_mlp_adapter`: a stage-1 projector written by LLaVA-1.5 (`mm_projector.bin`,
`torch.save`d, keys `model.mm_projector.*`) or by this project (`mm_projector.safetensors`)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from llava.model.builder import MM_PROJECTOR, build_from_backbones
from llava.model.llava_formats import LLAVA_MM_PROJECTOR
from llava.model.weights import UnsafeWeightsError
from llava.train.checkpoint import load_projector


class _Payload:
    """Not a tensor: unpickling it needs more than `weights_only=True` allows."""


def _baseline(tiny_checkpoints):
    llm, vision = tiny_checkpoints
    model, _ = build_from_backbones("llava_llama", llm, vision)
    return model


def _stage1_state(tiny_checkpoints) -> dict[str, torch.Tensor]:
    """The projector of a finished stage 1, under LLaVA's names."""
    generator = torch.Generator().manual_seed(11)
    model = _baseline(tiny_checkpoints)
    return {
        name: torch.randn(param.shape, generator=generator)
        for name, param in model.named_parameters()
        if name.startswith("model.mm_projector.")
    }


def _projector(model) -> dict[str, torch.Tensor]:
    return dict(model.model.mm_projector.named_parameters(prefix="model.mm_projector"))


@pytest.mark.parametrize("as_folder", [False, True], ids=["file", "folder"])
@pytest.mark.parametrize("name", [LLAVA_MM_PROJECTOR, MM_PROJECTOR])
def test_llavas_mm_projector_bin_and_safetensors_load_into_the_projector(
    tiny_checkpoints, tmp_path, name, as_folder
):
    state = _stage1_state(tiny_checkpoints)
    if name.endswith(".bin"):
        torch.save(state, tmp_path / name)  # as LLaVA's safe_save_model_for_hf_trainer writes it
    else:
        save_file(state, str(tmp_path / name))
    model = _baseline(tiny_checkpoints)
    load_projector(model, str(tmp_path if as_folder else tmp_path / name))
    for key, param in _projector(model).items():
        assert torch.equal(param.detach(), state[key]), key


def test_a_projector_pickle_needing_more_than_weights_only_is_refused_naming_it(tiny_checkpoints, tmp_path):
    state = _stage1_state(tiny_checkpoints)
    state["model.mm_projector.0.weight"] = _Payload()
    torch.save(state, tmp_path / LLAVA_MM_PROJECTOR)
    with pytest.raises(UnsafeWeightsError, match=rf"{LLAVA_MM_PROJECTOR}: refused: .*_Payload object"):
        load_projector(_baseline(tiny_checkpoints), str(tmp_path / LLAVA_MM_PROJECTOR))
    with pytest.raises(FileNotFoundError, match=rf"--pretrain_mm_mlp_adapter {tmp_path / 'empty'}: expected"):
        (tmp_path / "empty").mkdir()
        load_projector(_baseline(tiny_checkpoints), str(tmp_path / "empty"))
