"""ZeRO-3 and ZeRO-2 with 2 processes on CPU (gloo), through the test launcher shim, against a
1-process run without DeepSpeed."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig

from llava.train.deepspeed_files import check_deepspeed_checkpoint
from llava.train.resume import MANIFEST
from tests import tolerances
from tests.train.train_helpers import (
    FUSION_FLAGS,
    SUBPROCESS_ENV,
    CaptureSteps,
    max_abs_diff,
    run_training,
    trained_state,
    write_tampered_state,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Micro-batch 1 on each of 2 ranks == batch 2 on one process; no dropout, so the runs can agree.
# Adam's epsilon at 1, above every entry of the gradients (clipped to norm 1), keeps its update a
# Lipschitz function of them, so gradients that differ by rounding move the weights by rounding
# (`tolerances.adam_weights`); at the usual 1e-8 a weight whose gradient is at rounding level can
# move by a whole learning rate either way.
EPSILON, MAX_GRAD_NORM = 1.0, 1.0
COMMON = [
    *FUSION_FLAGS,
    "--fusion_dropout",
    "0",
    "--lora_dropout",
    "0",
    "--max_steps",
    "6",
    "--save_steps",
    "3",
    "--adam_epsilon",
    str(EPSILON),
    "--max_grad_norm",
    str(MAX_GRAD_NORM),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(argv: list[str], tmp_path: Path, must_succeed: bool = True) -> subprocess.CompletedProcess:
    config = tmp_path / "accelerator.json"
    config.write_text(json.dumps({"use_configured_state": True}))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        "-m", "llava.train.cpu_deepspeed_launch", *argv, "--accelerator_config", str(config),
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=600)
    if must_succeed:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _tamper(checkpoint: Path, marker: Path) -> Path:
    """Replace rank 0's model states of `checkpoint` with a code-running pickle, and its manifest
    entry too (an attacker who edits the folder can edit the manifest)."""
    tag = (checkpoint / "latest").read_text().strip()
    victim = sorted((checkpoint / tag).glob("*model_states.pt"))[0]
    write_tampered_state(victim, marker)
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    manifest["files"][victim.relative_to(checkpoint).as_posix()] = victim.stat().st_size
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))
    return victim


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, run_flags):
    out = tmp_path_factory.mktemp("single")
    logged = CaptureSteps()
    summary, _ = run_training(run_flags(out, *COMMON), callbacks=[logged])
    return out, summary, logged.steps


@pytest.mark.parametrize("config", ["zero3", "zero2", "zero3_offload"])
def test_zero_two_processes_match_one_process(
    config, single_process, run_flags, tiny_checkpoints, tmp_path, record_property
):
    """`zero3_offload` keeps the optimizer and parameters on the CPU and steps with DeepSpeedCPUAdam
    (JIT-built on first use), over the recipe's own parameter groups. Two ranks add the gradient's
    terms in other orders than one process (their own micro-batches, then the reduction)."""
    reference, ref_summary, steps = single_process
    config_file = REPO / f"scripts/{config}.json"
    stage = json.loads(config_file.read_text())["zero_optimization"]["stage"]
    out = tmp_path / config
    argv = run_flags(out, *COMMON, "--deepspeed", str(config_file))
    argv[argv.index("--per_device_train_batch_size") + 1] = "1"
    _torchrun(argv, tmp_path)

    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["deepspeed_enabled"] and summary["zero_stage"] == stage
    if stage == 3:
        assert summary["partitioned_parameters"] > 0  # really partitioned: local numel 0
    assert summary["optimizer"] == ("DeepSpeedCPUAdam" if config == "zero3_offload" else "AdamW")
    record_property("losses", summary["losses"])
    record_property("reference_losses", ref_summary["losses"])
    state, ref_state = trained_state(out), trained_state(reference)
    # The longest contraction: a micro-batch's tokens (2 x model_max_length), summed over in the
    # weights' gradients, or the MLP's width.
    llm, vision = (AutoConfig.from_pretrained(path) for path in tiny_checkpoints)
    tokens = 2 * int(argv[argv.index("--model_max_length") + 1])
    width, depth = tolerances.network(llm, vision, tokens=tokens)
    trained = sum(v.numel() for v in ref_state.values())
    clipped = [(lr, min(norm, MAX_GRAD_NORM)) for lr, norm in steps]  # the gradients Adam receives
    assert len(summary["losses"]) == len(ref_summary["losses"]) == len(steps) == 6
    for step, (a, b) in enumerate(zip(ref_summary["losses"], summary["losses"], strict=True)):
        # the forward pass's own rounding, plus the earlier steps' weight drift: each trained
        # weight off by at most `drift` moves the loss by at most |gradient|_1 x drift
        drift = tolerances.adam_weights(clipped[:step], width, depth, EPSILON, MAX_GRAD_NORM)
        assert abs(a - b) <= tolerances.forward(width, depth, a) + trained**0.5 * steps[step][1] * drift

    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in ref_state.items()}
    assert state["model.layers.0.self_attn.fusion.text_proj"].abs().max() > 0  # trained from zero
    assert all(v.abs().max() > 0 for k, v in state.items() if "lora_B" in k)
    record_property("weights_max_abs_diff_vs_1_process", max_abs_diff(state, ref_state))
    assert max_abs_diff(state, ref_state) <= tolerances.adam_weights(
        clipped, width, depth, EPSILON, MAX_GRAD_NORM
    )
    assert (out / "checkpoint-3" / MANIFEST).is_file() and not list(out.glob(".tmp-*"))  # published whole
    check_deepspeed_checkpoint(out / "checkpoint-3")  # a genuine checkpoint's files all load weights-only

    if config == "zero3":  # resume from the mid-run checkpoint in a fresh folder: same final weights
        resumed = tmp_path / "resumed"
        resumed.mkdir()
        shutil.copytree(out / "checkpoint-3", resumed / "checkpoint-3")
        argv[argv.index("--output_dir") + 1] = str(resumed)
        _torchrun([*argv, "--resume_from_checkpoint", "latest"], tmp_path)
        record_property("resume_max_abs_diff", max_abs_diff(trained_state(resumed), state))
        # the same processes repeat the same operations on the restored values: the same bits
        assert max_abs_diff(trained_state(resumed), state) == 0.0
        assert json.loads((resumed / "training_summary.json").read_text())["global_step"] == 6

        tampered = tmp_path / "tampered"
        tampered.mkdir()
        shutil.copytree(out / "checkpoint-3", tampered / "checkpoint-3")
        marker = tmp_path / "code_ran"
        victim = _tamper(tampered / "checkpoint-3", marker)
        argv[argv.index("--output_dir") + 1] = str(tampered)
        proc = _torchrun([*argv, "--resume_from_checkpoint", "latest"], tmp_path, must_succeed=False)
        assert proc.returncode != 0 and not marker.exists()
        assert f"UnsafeCheckpointFileError: {victim}: refused, unpickling it needs exec" in proc.stderr, (
            proc.stderr[-4000:]
        )
