"""What the lmms-eval tests share: the runner's answers to a question file, lmms-eval run as its
users run it (a subprocess, offline, on local tasks), and the samples it logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from llava.eval import model_vqa_loader


def loader_answers(model_path: str, questions: Path, out_dir: Path, max_new_tokens: int) -> list[str]:
    """`model_vqa_loader`'s greedy answers to `questions`, in question-id order."""
    answers = out_dir / "answers.jsonl"
    model_vqa_loader.main(
        [
            "--model-path", model_path, "--question-file", str(questions), "--answers-file", str(answers),
            "--temperature", "0", "--max_new_tokens", str(max_new_tokens), "--device", "cpu",
        ]
    )  # fmt: skip
    records = [json.loads(line) for line in answers.read_text(encoding="utf-8").splitlines()]
    return [r["text"] for r in sorted(records, key=lambda r: r["question_id"])]


def run_lmms_eval(model_path: str, tasks: Path, task_names: str, workdir: Path, *extra: str) -> Path:
    """`python -m lmms_eval` with the `inverse_llava` model on `task_names` from `tasks`, offline,
    batch 3, samples logged; returns its output folder (the run must succeed)."""
    out = workdir / "out"
    command = [
        sys.executable, "-m", "lmms_eval", "--model", "inverse_llava",
        "--model_args", f"pretrained={model_path},device=cpu", "--tasks", task_names,
        "--include_path", str(tasks), "--batch_size", "3", "--log_samples", "--output_path", str(out), *extra,
    ]  # fmt: skip
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(workdir / "hf"),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=workdir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def logged_samples(out: Path, task: str) -> list[dict]:
    """The samples lmms-eval logged for `task`, in document order."""
    (samples,) = out.rglob(f"*_samples_{task}.jsonl")
    return sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda r: r["doc_id"])


def sample_answers(rows: list[dict]) -> list[str]:
    """Each logged sample's filtered answer."""
    return [
        r["filtered_resps"] if isinstance(r["filtered_resps"], str) else r["filtered_resps"][0] for r in rows
    ]
