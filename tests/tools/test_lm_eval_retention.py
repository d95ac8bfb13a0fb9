"""lm-eval (`lm_eval --model hf`, as its users run it) scores the exported text path and the base
LLM on the same local task, offline; every log-likelihood it reports for the export is the fused
model's own, computed here, and the base LLM's are the base's."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llava.model.builder import load_pretrained_model
from llava.tools.export_text_model import main as export_main
from tests.tools.text_export_helpers import fold_tolerance
from tests.train.train_helpers import SUBPROCESS_ENV

# The lm-eval extra, installed by .ci/run.
pytest.importorskip("lm_eval", reason="needs the lm-eval extra: pip install -e '.[lm-eval]'")

TASK = "retention_tiny"
ITEMS = [
    ("What colour is the circle?", ["red", "green", "blue"], 0),
    ("How many squares are there?", ["one", "two", "three"], 1),
    ("Is there a red circle?", ["yes", "no"], 0),
    ("Where is the triangle?", ["left", "right", "top", "bottom"], 2),
    ("What shape is above the square?", ["circle", "triangle", "square"], 0),
    ("The answer is 2 + 3 =", ["5", "6", "7"], 0),
]
TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.fixture
def local_task(tmp_path) -> Path:
    """A multiple-choice task folder (its YAML over a local JSON-lines file), for `--include_path`."""
    items = tmp_path / "items.jsonl"
    with items.open("w", encoding="utf-8") as f:
        for question, choices, answer in ITEMS:
            f.write(json.dumps({"question": question, "choices": choices, "answer": answer}) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, items=items), encoding="utf-8")
    return tasks


def _lm_eval(model: Path | str, tasks: Path, out: Path) -> subprocess.Popen:
    """`lm_eval --model hf` on `model`, offline, with each request's log-likelihood logged."""
    command = shutil.which("lm_eval")
    assert command is not None, "lm-eval is importable but its `lm_eval` command is not on PATH"
    env = {
        **SUBPROCESS_ENV,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(out / "datasets-cache"),
    }
    args = ["--model", "hf", "--model_args", f"pretrained={model},dtype=float32", "--tasks", TASK]
    args += ["--include_path", str(tasks), "--device", "cpu", "--batch_size", "4"]
    args += ["--output_path", str(out), "--log_samples"]
    return subprocess.Popen(
        [command, *args], cwd=out.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _read_run(out: Path) -> tuple[dict, dict[tuple[str, str], float]]:
    """The task's results and `{(context, continuation): log-likelihood}` from lm-eval's files
    (`<out>/<model>/results_<date>.json`, `samples_<task>_<date>.jsonl`)."""
    (results_file,) = out.glob("*/results_*.json")
    (samples_file,) = out.glob(f"*/samples_{TASK}_*.jsonl")
    scores = {}
    for line in samples_file.read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        for i, request in enumerate(sample["arguments"].values()):
            loglikelihood, _ = sample["resps"][i][0]
            scores[request["arg_0"], request["arg_1"]] = float(loglikelihood)
    return json.loads(results_file.read_text(encoding="utf-8"))["results"][TASK], scores


@torch.no_grad()
def _loglikelihoods(model, tokenizer, requests) -> tuple[dict[tuple[str, str], float], float, int]:
    """Each request's log-likelihood, tokenised as lm-eval 0.4.13's `hf` model does for a causal
    LM (`_encode_pair`: the context's trailing spaces move to the continuation, context +
    continuation is encoded whole with the tokenizer's default special tokens, the continuation
    is what follows the context's own encoding); also the largest |logit| and continuation length."""
    scores, largest, longest = {}, 0.0, 0
    for context, continuation in requests:
        context_ids = tokenizer.encode(context)
        whole = tokenizer.encode(context + continuation)
        target = whole[len(context_ids) :]
        logits = model(input_ids=torch.tensor([whole[:-1]])).logits[0]  # [T - 1, V]
        logprobs = torch.log_softmax(logits[-len(target) :], dim=-1)
        scores[context, continuation] = logprobs.gather(1, torch.tensor(target)[:, None]).sum().item()
        largest, longest = max(largest, logits.abs().max().item()), max(longest, len(target))
    return scores, largest, longest


@pytest.mark.slow
def test_lm_eval_scores_the_export_as_the_fused_model(
    tiny_model_path, tiny_checkpoints, local_task, tmp_path
):
    llm, _ = tiny_checkpoints
    exported = tmp_path / "text"
    export_main(["--model-path", tiny_model_path, "--output-dir", str(exported)])
    runs = {name: tmp_path / "lm-eval" / name for name in ("exported", "base")}
    for out in runs.values():
        out.mkdir(parents=True)
    procs = {"exported": _lm_eval(exported, local_task, runs["exported"])}
    procs["base"] = _lm_eval(llm, local_task, runs["base"])
    for name, proc in procs.items():
        log, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"lm_eval on the {name} model failed:\n{log[-4000:]}"

    results = {name: _read_run(out) for name, out in runs.items()}
    for metrics, scores in results.values():
        assert 0.0 <= metrics["acc,none"] <= 1.0 and metrics["sample_len"] == len(ITEMS)
        assert len(scores) == sum(len(choices) for _, choices, _ in ITEMS)
    requests = sorted(results["exported"][1])
    assert requests == sorted(results["base"][1])

    tokenizer = AutoTokenizer.from_pretrained(exported)
    _, fused, _, _ = load_pretrained_model(tiny_model_path, device="cpu")
    base = AutoModelForCausalLM.from_pretrained(llm).eval()
    expected = {"exported": _loglikelihoods(fused, tokenizer, requests)}
    expected["base"] = _loglikelihoods(base, tokenizer, requests)
    # A log-likelihood sums, over the continuation's tokens, a logit minus the log-sum-exp of its
    # row: each off by at most a logit's error, fold_tolerance (lm-eval's right-padded batches
    # and this file's single rows differ only in summation order as well).
    bounds = {}
    for name, (_, largest, longest) in expected.items():
        bounds[name] = (
            2 * longest * fold_tolerance(torch.tensor(largest), base.config, fused.config.mm_hidden_size)
        )
        reported = results[name][1]
        worst = max(abs(reported[r] - expected[name][0][r]) for r in requests)
        assert worst <= bounds[name], (name, worst, bounds[name])
    # The comparison can fail: the fused model's text path is not the base LLM's.
    gap = max(abs(results["exported"][1][r] - results["base"][1][r]) for r in requests)
    assert gap > 100 * bounds["exported"]
