"""The authors' bundle through the project's entry points, not only its own reader: LLaVA's
`load_pretrained_model` (the one loader every runner, the CLI, the server and lmms-eval call) from
a folder and from a hub id in an offline cache, and an eval runner started as users start it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
from transformers import AutoConfig

from llava.eval import model_vqa_loader
from llava.model.builder import load_pretrained_model
from llava.model.formats.authors_bundle_load import read_authors_bundle
from tests.model.authors_bundle_helpers import (
    BUNDLE_ID,
    add_to_cache,
    random_delta,
    revision_of,
    tiny_spec,
    write_bundle,
)
from tests.model.test_authors_bundle_read import PROMPT

QUESTIONS = ["What is in the image?", "Is there a circle?", "Describe the picture."]


def _offline(monkeypatch, hub) -> None:
    """What `HF_HUB_OFFLINE=1 HF_HUB_CACHE=<cache>` set at import, for this process."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub.cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _bundle(hub, folder, repo_id: str):
    spec = tiny_spec(hub)
    written = write_bundle(folder, spec, random_delta(spec, AutoConfig.from_pretrained(hub.language)))
    add_to_cache(hub.cache, repo_id, revision_of(repo_id), written)
    return written


def _logits(model, seed: int = 0) -> torch.Tensor:
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=PROMPT, images=images).logits  # [1, T, V]


def test_load_pretrained_model_reads_a_bundle_folder_and_hub_id(tiny_hub, tmp_path, monkeypatch):
    """Folder and hub id give the reader's model, bit for bit (the same tensors, the same sums)."""
    _offline(monkeypatch, tiny_hub)
    repo_id = f"{BUNDLE_ID}-loader"
    folder = _bundle(tiny_hub, tmp_path / "bundle", repo_id)
    direct = read_authors_bundle(
        folder,
        dtype=torch.float32,
        attn_implementation="eager",
        cache_dir=tiny_hub.cache,
        local_files_only=True,
    ).model
    expected = _logits(direct)
    for location in (str(folder), repo_id):
        tokenizer, model, processor, context_len = load_pretrained_model(
            location, None, "inverse-llava-7b", device="cpu", dtype=torch.float32, attn_implementation="eager"
        )
        assert torch.equal(_logits(model), expected), location
        assert tokenizer.pad_token is not None and processor is not None and context_len == 2048
    assert not torch.equal(_logits(direct, seed=1), expected)  # the image reaches the logits


def test_an_eval_runner_answers_from_a_hub_id_offline(tiny_hub, tmp_path, monkeypatch):
    """`python -m llava.eval.model_vqa_loader --model-path <hub id>` with only HF_HUB_OFFLINE and
    HF_HUB_CACHE set answers as the same runner does from the bundle's folder."""
    repo_id = f"{BUNDLE_ID}-runner"
    folder = _bundle(tiny_hub, tmp_path / "bundle", repo_id)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    questions = tmp_path / "questions.jsonl"
    records = [{"question_id": i, "image": f"img{i % 2}.png", "text": q} for i, q in enumerate(QUESTIONS)]
    questions.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    def args(model_path: str, answers) -> list[str]:
        return [
            "--model-path", model_path, "--question-file", str(questions), "--image-folder", str(images),
            "--answers-file", str(answers), "--max_new_tokens", "6",
        ]  # fmt: skip

    _offline(monkeypatch, tiny_hub)
    model_vqa_loader.main(args(str(folder), tmp_path / "from_folder.jsonl"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tiny_hub.cache), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "llava.eval.model_vqa_loader", *args(repo_id, tmp_path / "from_hub.jsonl")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]

    def answers(name: str) -> list[tuple]:
        lines = (tmp_path / name).read_text(encoding="utf-8").splitlines()
        return [(r["question_id"], r["text"]) for r in map(json.loads, lines)]

    assert answers("from_hub.jsonl") == answers("from_folder.jsonl")
    assert len(answers("from_hub.jsonl")) == len(QUESTIONS)
