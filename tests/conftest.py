"""Shared fixtures: tiny offline checkpoints built once per test session, a complete tiny
`fusion_llama` checkpoint, the toy data set, a few PNG images, and one intra-op thread for every test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.data.toy import toy_records, write_dataset
from llava.model.builder import build_from_backbones
from llava.model.vision_tower import load_image_processor
from llava.tools.make_tiny_checkpoints import make_tiny_checkpoints

COLOURS = ["red", "green", "blue", "yellow"]
SIZES = [(40, 32), (32, 32), (24, 48), (48, 40)]


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> tuple[str, str]:
    """`(llm_path, vision_path)`: a tiny Llama with its tokenizer and a tiny CLIP tower (32 px, 16 patches)."""
    llm, vision = make_tiny_checkpoints(tmp_path_factory.mktemp("tiny"))
    return str(llm), str(vision)


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory):
    """`tiny_backbones(llm, tower)` -> `(llm_path, vision_path)`: a tiny LLM of a family
    (`llava.tools.make_tiny_checkpoints.LLMS`) and a tiny `clip` / `siglip` tower, built once each."""
    built: dict[tuple[str, str], tuple[str, str]] = {}

    def _backbones(llm: str = "llama", tower: str = "clip") -> tuple[str, str]:
        if (llm, tower) not in built:
            paths = make_tiny_checkpoints(
                tmp_path_factory.mktemp(f"tiny-{llm}-{tower}"), llm=llm, tower=tower
            )
            built[llm, tower] = (str(paths[0]), str(paths[1]))
        return built[llm, tower]

    return _backbones


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Two cores shared by parallel jobs: one intra-op thread avoids oversubscription."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_model_path(tiny_checkpoints, tmp_path_factory) -> str:
    """A complete `fusion_llama` checkpoint (weights, tokenizer, image processor) named `tiny-fusion`.

    The fusion branch gets random (not initial) weights so that the images change the answers.
    """
    llm, vision = tiny_checkpoints
    model, report = build_from_backbones("fusion_llama", llm, vision, fusion_dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in report.missing:
            params[name].copy_(torch.randn(params[name].shape, generator=generator) * 0.2)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-fusion"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(llm).save_pretrained(path)
    load_image_processor(vision).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> tuple[str, str]:
    """`(json_path, image_folder)` of 24 well-formed records (18 with an image, 6 text-only)."""
    return write_dataset(tmp_path_factory.mktemp("toy"), *toy_records())


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """`img0.png` .. `img3.png`: plain colours, mostly not square (so `pad` matters)."""
    folder = tmp_path_factory.mktemp("images")
    for i, (colour, size) in enumerate(zip(COLOURS, SIZES, strict=True)):
        image = Image.new("RGB", size, colour)
        image.paste((255, 255, 255), (2, 2, 10 + 3 * i, 12))
        image.save(folder / f"img{i}.png")
    return folder
