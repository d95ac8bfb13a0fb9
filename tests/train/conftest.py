"""Training-test fixtures: the flags of tiny runs and the arguments the shell scripts pass."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def run_flags(tiny_checkpoints, toy_dataset):
    """`run_flags(output_dir, *extra, data=None, lora=True, version="v1", backbones=None, **settings)`:
    the flags of a tiny run (LoRA unless `lora=False`) on the toy data set (or `data`), from the
    tiny Llama + CLIP (or `backbones`, an `(llm, vision)` pair); `settings` replace flags' values
    (None drops the flag)."""

    def _flags(
        output_dir,
        *extra: str,
        data: tuple[str, str] | None = None,
        lora: bool = True,
        version: str = "v1",
        backbones: tuple[str, str] | None = None,
        **settings: str | None,
    ) -> list[str]:
        llm, vision = backbones or tiny_checkpoints
        data_path, image_folder = data or toy_dataset
        flags = {
            "model_name_or_path": llm,
            "vision_tower": vision,
            "version": version,
            "data_path": data_path,
            "image_folder": image_folder,
            "output_dir": str(output_dir),
            "per_device_train_batch_size": "2",
            "learning_rate": "4e-3",
            "lr_scheduler_type": "cosine",
            "warmup_ratio": "0.03",
            "weight_decay": "0.0",
            "logging_steps": "1",
            "report_to": "none",
            "model_max_length": "128",
            "disable_tqdm": "True",
            "seed": "0",
        }
        if lora:
            flags.update(lora_enable="True", lora_r="8", lora_alpha="16")
        flags.update(settings)
        return [
            item for name, value in flags.items() if value is not None for item in (f"--{name}", value)
        ] + list(extra)

    return _flags


@pytest.fixture
def script_argv():
    """`script_argv(folder, script, tmp_path)`: the arguments `scripts/<folder>/<script>` hands to
    `llava/train/train_mem.py`, read through a stand-in `deepspeed` launcher that only records them."""
    repo = Path(__file__).resolve().parents[2]

    def _argv(folder: str, script: str, tmp_path: Path) -> list[str]:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        record = tmp_path / "argv.txt"
        fake = bin_dir / "deepspeed"
        fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\n')
        fake.chmod(0o755)
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "REPORT_TO": "none"}
        subprocess.run(
            ["bash", str(repo / "scripts" / folder / script)], cwd=repo, env=env, check=True, timeout=60
        )
        argv = record.read_text().splitlines()
        return argv[argv.index("llava/train/train_mem.py") + 1 :]

    return _argv
