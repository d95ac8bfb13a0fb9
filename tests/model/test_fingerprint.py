"""Location fingerprints: the same content under another path is the same, other weights are not."""

from __future__ import annotations

import shutil

import torch
from safetensors.torch import save_file

from llava.model.fingerprint import location_fingerprint


def _checkpoint(folder, seed: int):
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    save_file(
        {"w": torch.randn(600_000, generator=torch.Generator().manual_seed(seed))},
        folder / "model.safetensors",
    )


def test_moved_folder_keeps_its_fingerprint_and_retrained_weights_change_it(tmp_path):
    _checkpoint(tmp_path / "a", seed=0)
    first = location_fingerprint(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    assert location_fingerprint(tmp_path / "moved") == first
    shutil.rmtree(tmp_path / "a")
    _checkpoint(tmp_path / "a", seed=1)  # retrained in place: same names, same sizes
    assert location_fingerprint(tmp_path / "a") != first
    assert location_fingerprint("lmsys/vicuna-7b-v1.5") == "hub:lmsys/vicuna-7b-v1.5"
    assert location_fingerprint(None) is None


def test_a_file_is_hashed_whole(tmp_path):
    (tmp_path / "data.json").write_text("[1]")
    before = location_fingerprint(tmp_path / "data.json")
    (tmp_path / "data.json").write_text("[2]")
    assert location_fingerprint(tmp_path / "data.json") != before


def test_an_open_clip_local_dir_is_its_folder(tmp_path):
    """`local-dir:FOLDER` (open_clip's location of a local tower) is fingerprinted as the folder,
    its `open_clip_config.json` included, not taken for a hub id."""
    folder = tmp_path / "tower"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text('{"model_cfg": {"embed_dim": 8}}')
    save_file(
        {"w": torch.randn(1000, generator=torch.Generator().manual_seed(0))},
        folder / "open_clip_model.safetensors",
    )
    first = location_fingerprint(f"local-dir:{folder}")
    assert first.startswith("sha256:") and first == location_fingerprint(folder)
    (folder / "open_clip_config.json").write_text('{"model_cfg": {"embed_dim": 16}}')
    assert location_fingerprint(f"local-dir:{folder}") != first
