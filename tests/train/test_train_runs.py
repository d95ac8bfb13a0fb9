"""End-to-end runs of `python -m llava.train.train` on the tiny checkpoints (in-process, CPU)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoConfig, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from llava.constants import IMAGE_TOKEN_INDEX
from llava.data.records import BadSampleError
from llava.data.toy import image_record, write_broken_dataset, write_dataset
from llava.model import FusionLlamaForCausalLM
from llava.model.builder import load_pretrained_model
from llava.train.arguments import parse_arguments
from llava.train.merge import merge_lora
from llava.train.train import main, train
from llava.train.trainer import NonFiniteLossError
from tests import tolerances
from tests.train.train_helpers import (
    BASELINE_FLAGS,
    FUSION_FLAGS,
    SUBPROCESS_ENV,
    initial_weights,
    max_abs_diff,
    run_training,
    trained_state,
)

STEPS = ["--max_steps", "20", "--save_steps", "10"]
KILL_HELPER = Path(__file__).with_name("kill_after_save.py")


@pytest.fixture(scope="module")
def fusion_run(tmp_path_factory, run_flags):
    """20 steps of Inverse-LLaVA (LoRA + fusion, gradient checkpointing), checkpoints at 10 and 20."""
    out = tmp_path_factory.mktemp("fusion")
    argv = run_flags(out, *FUSION_FLAGS, *STEPS, "--activation_checkpointing", "True")
    summary, weights = run_training(argv)
    return out, argv, summary, weights


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory, run_flags):
    """20 steps of the LLaVA-1.5 baseline (LoRA + projector), modality-grouped batches."""
    out = tmp_path_factory.mktemp("baseline")
    summary, weights = run_training(
        run_flags(out, *BASELINE_FLAGS, *STEPS, "--group_by_modality_length", "True")
    )
    return out, summary, weights


def _check_run(summary, weights, start, trained_prefix: str):
    losses = summary["losses"]
    assert len(losses) == 20 and summary["global_step"] == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2, losses
    lora = [n for n in weights if "lora_B" in n]
    assert lora and all(weights[n].abs().max() > 0 for n in lora)  # LoRA B starts at zero
    trained = [n for n in start if trained_prefix in n]
    assert trained and all(not torch.equal(weights[n], start[n]) for n in trained)
    frozen = [n for n in start if trained_prefix not in n]
    assert len(frozen) > 50
    changed = [n for n in frozen if not torch.equal(weights[n], start[n])]
    assert changed == [], f"frozen parameters changed: {changed[:5]}"


def test_fusion_run_trains_lora_and_fusion_only(fusion_run, tiny_checkpoints, record_property):
    out, _, summary, weights = fusion_run
    record_property("losses", summary["losses"])
    start = initial_weights("fusion_llama", *tiny_checkpoints, mm_vision_select_layer=[-1])
    _check_run(summary, weights, start, ".fusion.")
    assert summary["trained_groups"] == {"lora": 42, "fusion": 4}
    assert not any(t.startswith("model.layers.0.") for t in summary["lora_targets"])  # fusion layer skipped
    assert summary["skipped_samples"] == 0 and not summary["deepspeed_enabled"]


def test_baseline_run_trains_lora_and_projector_only(baseline_run, tiny_checkpoints, record_property):
    _, summary, weights = baseline_run
    record_property("losses", summary["losses"])
    start = initial_weights("llava_llama", *tiny_checkpoints, mm_vision_select_layer=[-2])
    _check_run(summary, weights, start, "mm_projector")
    assert summary["trained_groups"] == {"lora": 56, "projector": 4}


@pytest.mark.parametrize("step", ["checkpoint-10", "."])
def test_checkpoints_are_complete_and_load(fusion_run, tiny_checkpoints, step):
    out, *_ = fusion_run
    folder = out / step
    names = {p.name for p in folder.iterdir()}
    expected = {
        "adapter_model.safetensors",
        "adapter_config.json",
        "non_lora_trainables.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    }
    assert expected <= names
    assert not [n for n in names if n.endswith((".bin", ".pt")) and "model" in n]  # weights: safetensors only
    assert set(load_file(folder / "non_lora_trainables.safetensors")) == {
        f"model.layers.0.self_attn.fusion.{name}"
        for name in ("alpha", "text_to_vision", "text_proj", "vision_proj")
    }
    tokenizer, model, processor, _ = load_pretrained_model(
        str(folder), model_base=tiny_checkpoints[0], device="cpu"
    )
    assert isinstance(model, FusionLlamaForCausalLM) and model.config.fusion_layer_ids == [0]
    assert processor is not None


def test_kill_and_resume_equals_uninterrupted(fusion_run, tmp_path, record_property):
    reference, argv, *_ = fusion_run
    killed = tmp_path / "killed"
    argv = [a if a != str(reference) else str(killed) for a in argv]
    proc = subprocess.run(
        [sys.executable, str(KILL_HELPER), "10", *argv],
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (killed / "checkpoint-10" / "trainer_state.json").exists() and not (
        killed / "checkpoint-20"
    ).exists()
    summary = main([*argv, "--resume_from_checkpoint", "latest"])
    assert summary["global_step"] == 20
    diff = max_abs_diff(trained_state(killed), trained_state(reference))
    record_property("max_abs_diff", diff)
    assert diff == 0.0, diff  # resumed: the same operations on the same values in the same order


def test_merged_equals_unmerged_greedy(fusion_run, tiny_checkpoints, tmp_path, record_property):
    out, *_ = fusion_run
    llm, vision = tiny_checkpoints
    merged_dir = merge_lora(str(out), llm, str(tmp_path / "merged"))
    tokenizer, merged, processor, _ = load_pretrained_model(str(merged_dir), device="cpu")

    base = FusionLlamaForCausalLM.from_pretrained(llm, config=AutoConfig.from_pretrained(out))
    base.get_vision_tower().load_pretrained_weights(vision)
    trained = load_file(out / "non_lora_trainables.safetensors")
    params = dict(base.named_parameters())
    with torch.no_grad():
        for name, value in trained.items():
            params[name].copy_(value)
    unmerged = PeftModel.from_pretrained(base, str(out)).eval()

    ids = tokenizer(
        "A chat between a curious user and an artificial intelligence assistant. USER: "
    ).input_ids
    ids += [IMAGE_TOKEN_INDEX] + tokenizer(
        "\nWhat is in the image? ASSISTANT:", add_special_tokens=False
    ).input_ids
    input_ids = torch.tensor([ids])
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits_m = merged(input_ids=input_ids, images=images).logits
        logits_u = unmerged(input_ids=input_ids, images=images).logits
        with unmerged.disable_adapter():
            logits_base = unmerged(input_ids=input_ids, images=images).logits
    record_property("logits_max_abs_diff", (logits_m - logits_u).abs().max().item())
    record_property("adapter_effect", (logits_base - logits_u).abs().max().item())
    # W + B A against W x + B (A x): the same products, summed in other orders
    tolerance = tolerances.model_forward(logits_u, merged.config, tokens=logits_u.shape[1])
    assert (logits_m - logits_u).abs().max() <= tolerance
    assert (logits_base - logits_u).abs().max() > 1e-3  # the adapter matters
    kwargs = {"images": images, "max_new_tokens": 12, "do_sample": False}
    out_m = merged.generate(input_ids, **kwargs)
    out_u = unmerged.get_base_model().generate(input_ids, **kwargs)
    assert out_m.tolist() == out_u.tolist()


class LargestLoraBGradient(TrainerCallback):
    """The largest |gradient| of LoRA's B matrices that the first optimizer step receives (after
    clipping), and Adam's epsilon."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self.epsilon = args.adam_epsilon
            grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n and p.grad is not None]
            self.largest = max(g.abs().max().item() for g in grads)


@pytest.mark.parametrize("ratio", [None, 8.0])
def test_loraplus_moves_lora_b_at_its_multiple_of_the_rate(run_flags, tmp_path, ratio):
    """Adam's first step moves every parameter with a gradient by its group's rate (its update is
    lr x g / (|g| + eps)); LoRA's B starts at zero, so after one step its largest entry is lr x ratio."""
    extra = [] if ratio is None else ["--loraplus_lr_ratio", str(ratio)]
    argv = run_flags(
        tmp_path, *BASELINE_FLAGS, "--max_steps", "1", "--warmup_ratio", "0", "--save_strategy", "no",
        "--lr_scheduler_type", "constant", *extra,
    )  # fmt: skip
    first = LargestLoraBGradient()
    _, weights = run_training(argv, callbacks=[first])
    b_max = max(weights[n].abs().max().item() for n in weights if "lora_B" in n)
    # The largest entry, of the largest |g|, falls short of lr by eps / (|g| + eps), give or take
    # float32's rounding in the step's operations (the moments, bias corrections, square root,
    # epsilon, division and lr: 8 roundings of u).
    rel = first.epsilon / first.largest + 8 * tolerances.U32
    assert b_max == pytest.approx(4e-3 * (ratio or 1.0), rel=rel)


def test_bad_samples_are_skipped_and_counted(run_flags, tmp_path):
    data = write_broken_dataset(tmp_path / "data")
    argv = run_flags(
        tmp_path / "run", *FUSION_FLAGS, "--num_train_epochs", "1", "--save_strategy", "no", data=data
    )
    summary, _ = run_training(argv)
    assert summary["skipped_samples"] == 3 and summary["global_step"] == 3
    with pytest.raises(BadSampleError, match=r"record 1 \(id 'img-1'\): image file not found"):
        run_training([*argv, "--strict_data", "True", "--overwrite_output_dir", "True"])


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(run_flags, tmp_path):
    out = tmp_path / "run"
    argv = run_flags(
        out,
        *FUSION_FLAGS,
        "--max_steps",
        "6",
        "--save_steps",
        "1",
        "--learning_rate",
        "1e30",
        "--fusion_lr",
        "1e30",
        "--max_grad_norm",
        "0",
    )
    with pytest.raises(NonFiniteLossError, match="non-finite loss") as info:
        run_training(argv)
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints and str(checkpoints[-1]) in str(info.value)
    assert all(torch.isfinite(t).all() for t in trained_state(checkpoints[-1]).values())
    assert not (out / "training_summary.json").exists()


def test_stage1_projector_then_stage2_from_it(run_flags, tiny_checkpoints, tmp_path):
    stage1 = tmp_path / "stage1"
    colours = ["red", "green", "blue"] * 3  # LCS-558K-like captions: one image, one answer
    captions = write_dataset(
        tmp_path / "captions",
        [image_record(i, c, f"{i}.png") for i, c in enumerate(colours)],
        {f"{i}.png": c for i, c in enumerate(colours)},
    )
    stage1_flags = ["--model_type", "llava_llama", "--max_steps", "3", "--save_strategy", "no"]
    flags = run_flags(stage1, *stage1_flags, data=captions, lora=False, version="plain")
    summary, weights = run_training([*flags, "--tune_mm_mlp_adapter", "True"])
    assert summary["trained_groups"] == {"projector": 4}
    projector = load_file(stage1 / "mm_projector.safetensors")
    assert set(projector) == {
        "model.mm_projector.0.weight",
        "model.mm_projector.0.bias",
        "model.mm_projector.2.weight",
        "model.mm_projector.2.bias",
    }
    _, model, _, _ = load_pretrained_model(str(stage1), model_base=tiny_checkpoints[0], device="cpu")
    assert torch.equal(model.model.mm_projector[0].weight, projector["model.mm_projector.0.weight"])

    stage2 = tmp_path / "stage2"
    argv = run_flags(
        stage2,
        *BASELINE_FLAGS,
        "--max_steps",
        "1",
        "--save_strategy",
        "no",
        "--learning_rate",
        "0",
        "--mm_projector_lr",
        "0",
        "--pretrain_mm_mlp_adapter",
        str(stage1 / "mm_projector.safetensors"),
    )
    _, weights = run_training(argv)
    assert torch.equal(weights["model.mm_projector.2.weight"], projector["model.mm_projector.2.weight"])


def test_summary_file_is_written(baseline_run):
    out, summary, _ = baseline_run
    assert json.loads((out / "training_summary.json").read_text())["losses"] == summary["losses"]


def test_report_to_tensorboard_writes_the_losses(run_flags, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    argv = run_flags(out, *FUSION_FLAGS, "--max_steps", "3", "--save_strategy", "no")
    summary, _ = run_training([*argv, "--report_to", "tensorboard"])
    events = list(out.rglob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    logged = [event.value for event in accumulator.Scalars("train/loss")]
    # tensorboard stores a scalar as a float32: each loss rounded to its nearest float32
    assert logged == [torch.tensor(loss, dtype=torch.float32).item() for loss in summary["losses"]]


class _SamplerOrder(TrainerCallback):
    """The order in which the run's own dataloader draws the samples of its first epoch, and the
    dataset's length estimates."""

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.sampler = train_dataloader.batch_sampler.sampler
        self.order = list(self.sampler)
        self.lengths = [abs(n) for n in train_dataloader.dataset.modality_lengths]


def test_group_by_length_draws_samples_longest_first_without_building_them(tmp_path, run_flags):
    order = _SamplerOrder()
    argv = run_flags(
        tmp_path, *FUSION_FLAGS, "--max_steps", "2", "--train_sampling_strategy", "group_by_length"
    )
    summary = train(*parse_arguments(argv), callbacks=[order])
    assert summary["global_step"] == 2 and summary["skipped_samples"] == 0
    assert isinstance(order.sampler, LengthGroupedSampler)
    assert order.sampler.lengths == order.lengths  # the estimates, not lengths of built samples
    assert sorted(order.order) == list(range(len(order.lengths)))  # a permutation: nothing lost
    # Trainer's megabatches: 24 // (2 x 4) = 3 batches of 2, each sorted longest first, the
    # longest sample of all swapped to the very front
    drawn = [order.lengths[i] for i in order.order]
    megabatches = [drawn[i : i + 6] for i in range(0, len(drawn), 6)]
    assert all(m[1:] == sorted(m[1:], reverse=True) for m in megabatches)
    assert drawn[0] == max(drawn) and len(set(drawn)) > 1
