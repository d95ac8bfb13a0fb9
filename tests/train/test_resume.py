"""What a checkpoint folder promises and what resuming guarantees: atomic checkpoints, `latest` =
the newest complete one, a used output dir refused, resume refusing missing state and changed
flags, shape-checked and named weight loads, disk-full saves, and SIGKILLs at random moments."""

from __future__ import annotations

import json
import logging
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from llava.model.builder import build_from_backbones
from llava.model.weights import load_weights as read_safetensors
from llava.tools.make_tiny_checkpoints import make_tiny_checkpoints
from llava.train.arguments import parse_arguments, resolve_run
from llava.train.checkpoint import load_trained_weights
from llava.train.deepspeed_files import UnsafeCheckpointFileError, check_deepspeed_checkpoint
from llava.train.recipe import apply_recipe
from llava.train.resume import (
    MANIFEST,
    RECORDED_FLAGS,
    SUMMARY_FILE,
    IncompleteCheckpointError,
    ResumeMismatchError,
    UsedOutputDirError,
    check_training_state_files,
    checkpoint_problem,
    compare_flags,
    resolve_resume,
)
from llava.train.train import main as train_main
from llava.train.train import train
from llava.train.trainer import CheckpointWriteError
from tests.train.fault_run import RenameKill, TimedKill, run_killed
from tests.train.train_helpers import (
    FUSION_FLAGS,
    SUBPROCESS_ENV,
    RunsCode,
    max_abs_diff,
    run_training,
    trained_state,
    write_tampered_state,
)

STEPS = ["--max_steps", "6", "--save_steps", "1"]
FAULT_HELPER = Path(__file__).with_name("fault_run.py")


def _grouped_fusion_flags(max_steps: int, save_steps: int) -> list[str]:
    """The fusion run's flags in length-grouped order, with its step and save counts."""
    steps = ["--max_steps", str(max_steps), "--save_steps", str(save_steps)]
    return [*FUSION_FLAGS, *steps, "--train_sampling_strategy", "group_by_length"]


def _with_output_dir(argv: list[str], output_dir: Path) -> list[str]:
    argv = list(argv)
    argv[argv.index("--output_dir") + 1] = str(output_dir)
    return argv


def _copy_checkpoints(source: Path, target: Path, steps: list[int]) -> None:
    target.mkdir(parents=True)
    for step in steps:
        shutil.copytree(source / f"checkpoint-{step}", target / f"checkpoint-{step}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, run_flags):
    """6 uninterrupted steps of Inverse-LLaVA (dropout on), a checkpoint after every step."""
    out = tmp_path_factory.mktemp("reference")
    argv = run_flags(out, *FUSION_FLAGS, *STEPS)
    run_training(argv)
    return out, argv


def test_every_checkpoint_has_a_manifest_of_all_its_files(reference):
    out, _ = reference
    folders = sorted(out.glob("checkpoint-*"))
    assert [f.name for f in folders] == [f"checkpoint-{n}" for n in range(1, 7)]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left
    for folder in folders:
        manifest = json.loads((folder / MANIFEST).read_text())
        on_disk = {p.name: p.stat().st_size for p in folder.iterdir() if p.name != MANIFEST}
        assert manifest["files"] == on_disk and checkpoint_problem(folder) is None
        assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= set(on_disk)
        assert manifest["flags"]["learning_rate"] == 4e-3 and manifest["flags"]["fusion_targets"] == [
            "q",
            "k",
            "v",
        ]


def test_latest_skips_incomplete_checkpoints_and_resumes_exactly(reference, tmp_path, caplog):
    out, argv = reference
    run = tmp_path / "run"
    _copy_checkpoints(out, run, [1, 2, 3, 4])
    (run / "checkpoint-4" / "optimizer.pt").unlink()  # incomplete: lost a file
    partial = run / "checkpoint-5"  # incomplete: a save cut short, no manifest
    shutil.copytree(
        out / "checkpoint-5", partial, ignore=shutil.ignore_patterns(MANIFEST, "trainer_state.json")
    )
    with caplog.at_level(logging.WARNING, logger="llava.train.resume"):
        assert resolve_resume("latest", str(run)) == str(run / "checkpoint-3")
        assert resolve_resume("True", str(run)) == str(run / "checkpoint-3")
    assert "skipping incomplete checkpoint" in caplog.text
    assert str(partial) in caplog.text and str(run / "checkpoint-4" / "optimizer.pt") in caplog.text

    summary, _ = run_training([*_with_output_dir(argv, run), "--resume_from_checkpoint", "latest"])
    assert summary["global_step"] == 6
    # the same operations on the same values in the same order (weights, optimizer state, RNG and
    # data order restored): the same bits
    assert max_abs_diff(trained_state(run), trained_state(out)) == 0.0


def test_latest_without_a_complete_checkpoint_names_the_incomplete_ones(tmp_path):
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"no complete checkpoint-N in .*\(incomplete: checkpoint-3\)"
    ):
        resolve_resume("latest", str(tmp_path))


@pytest.mark.parametrize("missing", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"])
def test_resume_names_a_missing_state_file(reference, tmp_path, missing):
    out, argv = reference
    run = tmp_path / "run"
    _copy_checkpoints(out, run, [3])
    folder = run / "checkpoint-3"
    (folder / missing).unlink()
    with pytest.raises(IncompleteCheckpointError, match=re.escape(str(folder / missing))):
        run_training([*_with_output_dir(argv, run), "--resume_from_checkpoint", str(folder)])

    # also when the manifest does not list it (a checkpoint written without it, e.g. --save_only_model)
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"][missing]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(
        IncompleteCheckpointError, match=rf"{re.escape(str(folder / missing))} \(.*\) is missing"
    ):
        run_training([*_with_output_dir(argv, run), "--resume_from_checkpoint", str(folder)])


def test_resume_names_a_truncated_weights_file(reference, tmp_path):
    out, argv = reference
    run = tmp_path / "run"
    _copy_checkpoints(out, run, [3])
    weights = run / "checkpoint-3" / "non_lora_trainables.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(IncompleteCheckpointError, match=rf"{re.escape(str(weights))} has 1000 bytes"):
        run_training([*_with_output_dir(argv, run), "--resume_from_checkpoint", str(run / "checkpoint-3")])


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--learning_rate", "1e-3", r"--learning_rate: 0.004 in the checkpoint, 0.001 now"),
        ("--max_steps", "12", r"--max_steps: 6 in the checkpoint, 12 now"),
        ("--per_device_train_batch_size", "4", r"--per_device_train_batch_size: 2 in the checkpoint, 4 now"),
        ("--gradient_accumulation_steps", "2", r"--gradient_accumulation_steps: 1 in the checkpoint, 2 now"),
        ("--fusion_targets", "q", r"--fusion_targets: \['q', 'k', 'v'\] in the checkpoint, \['q'\] now"),
        ("--layer_ids_to_inject", "1", r"--layer_ids_to_inject: \[0\] in the checkpoint, \[1\] now"),
        ("--lora_r", "4", r"--lora_r: 8 in the checkpoint, 4 now"),
        ("--lora_alpha", "32", r"--lora_alpha: 16 in the checkpoint, 32 now"),
        ("--padding_free", "True", r"--padding_free: False in the checkpoint, True now"),
    ],
)
def test_resume_refuses_changed_flags_naming_flag_and_values(reference, tmp_path, flag, value, message):
    out, argv = reference
    run = tmp_path / "run"
    _copy_checkpoints(out, run, [3])
    argv = _with_output_dir(argv, run)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    with pytest.raises(ResumeMismatchError, match=message):
        run_training([*argv, "--resume_from_checkpoint", "latest"])


def _replace_flag(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def _other_content(tmp_path: Path, flag: str, argv: list[str]) -> str:
    """A location for `flag` holding other content of the same kind and shape as the run's."""
    if flag in ("--model_name_or_path", "--vision_tower"):
        llm, tower = make_tiny_checkpoints(tmp_path / "other", seed=1)  # same architectures
        return str(llm if flag == "--model_name_or_path" else tower)
    records = json.loads(Path(argv[argv.index("--data_path") + 1]).read_text())
    records[0]["conversations"][1]["value"] = "A crimson square."  # same count, one reply changed
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return str(path)


@pytest.mark.parametrize("flag", ["--model_name_or_path", "--vision_tower", "--data_path"])
def test_resume_refuses_other_content_under_a_flag(reference, tmp_path, flag):
    """Another base LLM (or tower) of the same architecture, or another data file of the same
    size: the fingerprints differ, and the refusal names the flag and both locations."""
    out, argv = reference
    run = tmp_path / "run"
    _copy_checkpoints(out, run, [3])
    other = _other_content(tmp_path, flag, argv)
    argv = _replace_flag(_with_output_dir(argv, run), flag, other)
    with pytest.raises(
        ResumeMismatchError, match=rf"the content of {flag} changed \(.*{re.escape(other)}"
    ) as info:
        run_training([*argv, "--resume_from_checkpoint", "latest"])
    assert str(info.value).count("the content of") == 1  # only that flag


def test_resume_refuses_another_template(reference, tmp_path):
    out, argv = reference
    run = tmp_path / "run"
    _copy_checkpoints(out, run, [3])
    argv = _replace_flag(_with_output_dir(argv, run), "--version", "llava_v1")
    with pytest.raises(ResumeMismatchError, match=r"--version: 'v1' in the checkpoint, 'llava_v1' now"):
        run_training([*argv, "--resume_from_checkpoint", "latest"])


def test_moved_models_and_data_resume_exactly(reference, tmp_path, tiny_checkpoints, toy_dataset):
    """Fingerprints are of content: the LLM, the tower and the data copied elsewhere resume."""
    out, argv = reference
    run = tmp_path / "run"
    _copy_checkpoints(out, run, [5])
    moved = tmp_path / "moved"
    for flag, source in zip(("--model_name_or_path", "--vision_tower"), tiny_checkpoints, strict=True):
        shutil.copytree(source, moved / flag.strip("-"))
        argv = _replace_flag(argv, flag, str(moved / flag.strip("-")))
    shutil.copytree(Path(toy_dataset[0]).parent, moved / "data")
    argv = _replace_flag(argv, "--data_path", str(moved / "data" / Path(toy_dataset[0]).name))
    argv = _replace_flag(argv, "--image_folder", str(moved / "data" / Path(toy_dataset[1]).name))
    summary, _ = run_training([*_with_output_dir(argv, run), "--resume_from_checkpoint", "latest"])
    assert summary["global_step"] == 6
    assert max_abs_diff(trained_state(run), trained_state(out)) == 0.0


def test_a_changed_usable_sample_count_is_described_not_named_as_a_flag(reference, tmp_path, toy_dataset):
    """One image gone from a copy of the image folder: the data file is the same, the data set
    yields one sample fewer; the refusal says so and points at the data flags."""
    out, argv = reference
    run = tmp_path / "run"
    _copy_checkpoints(out, run, [3])
    images = tmp_path / "images"
    shutil.copytree(toy_dataset[1], images)
    (images / "0.png").unlink()
    argv = _replace_flag(_with_output_dir(argv, run), "--image_folder", str(images))
    with pytest.raises(ResumeMismatchError) as info:
        run_training([*argv, "--resume_from_checkpoint", "latest"])
    message = str(info.value)
    assert (
        "the data set now yields 23 usable samples, the checkpoint's run had 24: check --data_path / "
        "--image_folder and the skipped-sample report" in message
    )
    assert "--num_samples" not in message and "the content of" not in message


def test_derived_quantities_are_described_as_such():
    saved = {name: None for name in RECORDED_FLAGS}
    current = dict(saved, world_size=1, trained_groups={"lora": 8}, deepspeed=False)
    saved.update(world_size=2, trained_groups={"lora": 8, "fusion": 3}, deepspeed=True)
    with pytest.raises(ResumeMismatchError) as info:
        compare_flags(saved, current, "ckpt")
    message = str(info.value)
    assert "the number of processes: 2 in the checkpoint's run, 1 now" in message
    assert "the trained parameter groups" in message and "whether DeepSpeed is used" in message
    for flag in ("--world_size", "--trained_groups", "--deepspeed:", "--num_samples"):
        assert flag not in message


def test_used_output_dir_is_refused_unless_resuming_or_overwriting(reference, tmp_path):
    out, argv = reference
    run = tmp_path / "run"
    _copy_checkpoints(out, run, [5, 6])
    shutil.copy(out / "training_summary.json", run / "training_summary.json")
    argv = _with_output_dir(argv, run)
    argv[argv.index("--max_steps") + 1] = "2"
    argv[argv.index("--learning_rate") + 1] = "1e-3"
    with pytest.raises(
        UsedOutputDirError, match=rf"--output_dir {re.escape(str(run))} already holds a run \(checkpoint-5"
    ) as info:
        run_training(argv)
    assert "--resume_from_checkpoint latest" in str(info.value) and "--overwrite_output_dir True" in str(
        info.value
    )
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-5", "checkpoint-6", "training_summary.json"]

    summary, _ = run_training([*argv, "--overwrite_output_dir", "True"])
    assert summary["global_step"] == 2
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-2",
    ]  # old ones gone
    for folder in run.glob("checkpoint-*"):
        assert json.loads((folder / MANIFEST).read_text())["flags"]["learning_rate"] == 1e-3


def test_save_total_limit_keeps_the_newest_complete_checkpoints(run_flags, tmp_path):
    out = tmp_path / "run"
    run_training(
        run_flags(out, *FUSION_FLAGS, "--max_steps", "4", "--save_steps", "1", "--save_total_limit", "2")
    )
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert all(checkpoint_problem(p) is None for p in out.glob("checkpoint-*"))


def _resume_model(tiny_checkpoints, argv: list[str]):
    """The model and plan a run with `argv` builds before loading its checkpoint."""
    model_args, data_args, training_args = parse_arguments(argv)
    spec = resolve_run(model_args, data_args, training_args)
    model, _ = build_from_backbones(spec.model_type, *tiny_checkpoints, **spec.config_fields)
    return apply_recipe(model, spec)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        (
            "--fusion_targets",
            "q",
            r"non_lora_trainables.safetensors: model.layers.0.self_attn.fusion.alpha has shape \(3,\), "
            r"the model's parameter \(1,\)",
        ),
        (
            "--lora_r",
            "4",
            r"adapter_model.safetensors: base_model\.model\.\S+\.lora_[AB]\.weight has shape \((8, \d+|\d+, 8)\), "
            r"the model's parameter \((4, \d+|\d+, 4)\)",
        ),
    ],
)
def test_weight_loads_check_every_shape_naming_the_key(reference, tiny_checkpoints, flag, value, message):
    out, argv = reference
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    model, plan = _resume_model(tiny_checkpoints, argv)
    with pytest.raises(ValueError, match=message):
        load_trained_weights(model, plan, str(out / "checkpoint-3"))


def _damaged_copy(out: Path, tmp_path: Path, file_name: str, damage) -> Path:
    """checkpoint-3 of the reference run, with `file_name`'s tensors passed through `damage`."""
    folder = tmp_path / "checkpoint-3"
    shutil.copytree(out / "checkpoint-3", folder)
    state = read_safetensors(str(folder / file_name))
    save_file(damage(state), str(folder / file_name))
    return folder


def _lora_values(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_a_missing_adapter_tensor_is_an_error_naming_it_and_the_file(reference, tiny_checkpoints, tmp_path):
    out, argv = reference
    dropped: list[str] = []

    def drop_one(state):
        dropped.append(sorted(state)[0])
        return {k: v for k, v in state.items() if k != dropped[0]}

    folder = _damaged_copy(out, tmp_path, "adapter_model.safetensors", drop_one)
    model, plan = _resume_model(tiny_checkpoints, argv)
    before = _lora_values(model)
    with pytest.raises(KeyError, match=re.escape(dropped[0])) as info:
        load_trained_weights(model, plan, str(folder))
    assert str(folder / "adapter_model.safetensors") in str(info.value) and "missing" in str(info.value)
    assert max_abs_diff(_lora_values(model), before) == 0.0  # nothing copied


def test_both_files_are_checked_before_anything_is_copied(reference, tiny_checkpoints, tmp_path):
    """A bad non-LoRA file leaves the LoRA tensors untouched (the adapter file is read first)."""
    out, argv = reference

    def widen(state):
        name = sorted(state)[0]
        return {**state, name: torch.zeros(*state[name].shape, 2)}

    folder = _damaged_copy(out, tmp_path, "non_lora_trainables.safetensors", widen)
    model, plan = _resume_model(tiny_checkpoints, argv)
    before = _lora_values(model)
    with pytest.raises(ValueError, match=r"non_lora_trainables.safetensors: .* has shape"):
        load_trained_weights(model, plan, str(folder))
    assert max_abs_diff(_lora_values(model), before) == 0.0

    load_trained_weights(model, plan, str(out / "checkpoint-3"))  # the intact folder loads every tensor
    saved = read_safetensors(str(out / "checkpoint-3" / "adapter_model.safetensors"))
    assert max_abs_diff({_peft_name(n): v for n, v in _lora_values(model).items()}, saved) == 0.0


def _peft_name(name: str) -> str:
    return name.replace(".default.", ".")


def test_an_fp16_run_without_deepspeed_needs_the_scaler_state(reference, tmp_path):
    out, _ = reference
    folder = tmp_path / "checkpoint-3"
    shutil.copytree(out / "checkpoint-3", folder)
    check_training_state_files(folder, world_size=1, deepspeed=False, fp16=False)
    with pytest.raises(
        IncompleteCheckpointError, match=rf"{re.escape(str(folder / 'scaler.pt'))} \(the fp16"
    ):
        check_training_state_files(folder, world_size=1, deepspeed=False, fp16=True)
    (folder / "scaler.pt").write_bytes(b"")
    check_training_state_files(folder, world_size=1, deepspeed=False, fp16=True)


class ExportFails(TrainerCallback, ExportableState):
    """A stateful callback whose state cannot be exported once training runs (a bug, not I/O)."""

    def __init__(self):
        self.stepped = False

    def on_step_end(self, args, state, control, **kwargs):
        self.stepped = True

    def state(self) -> dict:
        if self.stepped:  # the Trainer also exports it when training starts
            raise RuntimeError("ExportFails cannot export its state")
        return {"args": {}, "attributes": {}}


def test_a_save_failing_for_another_reason_has_no_free_space_hint(run_flags, tmp_path):
    out = tmp_path / "run"
    argv = run_flags(out, *FUSION_FLAGS, "--max_steps", "1", "--save_steps", "1")
    with pytest.raises(CheckpointWriteError, match="ExportFails cannot export") as info:
        train(*parse_arguments(argv), callbacks=[ExportFails()])
    message = str(info.value)
    assert f"could not write checkpoint {out / 'checkpoint-1'}" in message
    assert "Free space" not in message and "Fix the error and resume" in message
    assert not (out / "checkpoint-1").exists()


def test_a_corrupt_safetensors_file_is_named(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.ones(4, 4)}, str(path))
    path.write_bytes(b"\xff" * 8 + path.read_bytes()[8:])  # a header length beyond the file
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not a readable safetensors file"):
        read_safetensors(str(path))


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def _check_failed_save(out: Path, message: str, failed: str) -> None:
    assert f"could not write checkpoint {out / failed}" in message, message
    assert not (out / failed).exists()  # never published
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]  # its space given back
    assert all(checkpoint_problem(p) is None for p in out.glob("checkpoint-*"))


def test_disk_full_names_the_checkpoint_and_publishes_nothing(run_flags, tmp_path):
    """A real full disk: a 768 KiB tmpfs holds one checkpoint (about 520 KiB), not two."""
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "768k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the file-size-limit test covers the same path")
    try:
        out = disk / "run"
        with pytest.raises(CheckpointWriteError) as info:
            run_training(run_flags(out, *FUSION_FLAGS, "--max_steps", "3", "--save_steps", "1"))
        assert "No space left on device" in str(info.value.__cause__) or "unexpected pos" in str(
            info.value.__cause__
        )
        _check_failed_save(out, str(info.value), "checkpoint-2")
        assert resolve_resume("latest", str(out)) == str(out / "checkpoint-1")
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)  # the failed write may hold a descriptor


def test_a_file_size_limit_fails_the_save_naming_the_checkpoint(run_flags, tmp_path):
    """RLIMIT_FSIZE (a real OS error, EFBIG) below optimizer.pt's size: the first save fails."""
    out = tmp_path / "run"
    argv = run_flags(out, *FUSION_FLAGS, "--max_steps", "2", "--save_steps", "1")
    proc = subprocess.run(
        [sys.executable, str(FAULT_HELPER), "file-size-limit", str(200_000), *argv],
        env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "CheckpointWriteError: could not write checkpoint" in proc.stderr, proc.stderr[-3000:]
    assert "Free space (or fix the I/O error)" in proc.stderr
    _check_failed_save(out, proc.stderr, "checkpoint-1")


def test_deepspeed_files_load_weights_only_and_a_tampered_one_is_refused(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    checkpoint = tmp_path / "checkpoint-2"
    (checkpoint / "global_step2").mkdir(parents=True)
    (checkpoint / "latest").write_text("global_step2")
    genuine = {
        "optimizer_state_dict": {"zero_stage": ZeroStageEnum.gradients, "loss_scaler": LossScaler(1.0)}
    }
    torch.save(genuine, checkpoint / "global_step2" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    check_deepspeed_checkpoint(checkpoint)  # the types DeepSpeed's files hold are allowed

    marker = tmp_path / "marker"
    tampered = checkpoint / "global_step2" / "mp_rank_00_model_states.pt"
    write_tampered_state(tampered, marker)
    with pytest.raises(
        UnsafeCheckpointFileError, match=rf"{re.escape(str(tampered))}: refused, unpickling it needs exec,"
    ):
        check_deepspeed_checkpoint(checkpoint)
    assert not marker.exists()
    torch.load(tampered, weights_only=False)  # what DeepSpeed's engine would do: the code runs
    assert marker.read_text() == "ran"


def test_a_tampered_plain_pickle_is_refused_too(tmp_path):
    """Not torch's zip format but a bare pickle, which `torch.load` also accepts."""
    checkpoint = tmp_path / "checkpoint-2"
    (checkpoint / "global_step2").mkdir(parents=True)
    (checkpoint / "latest").write_text("global_step2")
    marker = tmp_path / "marker"
    tampered = checkpoint / "global_step2" / "mp_rank_00_model_states.pt"
    with open(tampered, "wb") as f:
        pickle.dump({"module": RunsCode(f"open({str(marker)!r}, 'w')")}, f)
    with pytest.raises(
        UnsafeCheckpointFileError, match=rf"{re.escape(str(tampered))}: refused, torch's weights-only"
    ):
        check_deepspeed_checkpoint(checkpoint)
    assert not marker.exists()


def test_group_by_length_resumed_in_a_later_epoch_equals_uninterrupted(run_flags, tmp_path):
    """24 samples in batches of 2: epoch 1 starts at step 12; killed after the save of step 14."""
    flags = _grouped_fusion_flags(max_steps=16, save_steps=14)
    reference = tmp_path / "reference"
    run_training(run_flags(reference, *flags))
    killed = tmp_path / "killed"
    argv = run_flags(killed, *flags)
    helper = Path(__file__).with_name("kill_after_save.py")
    proc = subprocess.run([sys.executable, str(helper), "14", *argv], env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run_training([*argv, "--resume_from_checkpoint", "latest"])
    assert max_abs_diff(trained_state(killed), trained_state(reference)) == 0.0  # resumed exactly


def _newest_step(run: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in run.glob("checkpoint-*")]
    return max(steps, default=0)


def _leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith((".tmp-", ".replaced-")))


def _resumed_copy_ends_exactly(run: Path, argv: list[str], reference: Path, probe: Path) -> None:
    """A copy of `run` resumed from `latest` ends with `reference`'s weights, bit for bit."""
    shutil.copytree(run, probe)
    summary, _ = run_training([*_with_output_dir(argv, probe), "--resume_from_checkpoint", "latest"])
    assert summary["global_step"] == _newest_step(reference)
    assert max_abs_diff(trained_state(probe), trained_state(reference)) == 0.0


def test_resuming_an_explicit_older_checkpoint_replaces_the_newer_ones(reference, tmp_path):
    """checkpoint-2 resumed while 3..6 exist: each newer one is replaced by the new trajectory's
    (moved aside, then deleted), and the run ends with the uninterrupted weights."""
    out, argv = reference
    run = tmp_path / "run"
    _copy_checkpoints(out, run, [1, 2, 3, 4, 5, 6])
    old = {step: (run / f"checkpoint-{step}" / MANIFEST).stat().st_mtime_ns for step in range(1, 7)}
    summary, _ = run_training(
        [*_with_output_dir(argv, run), "--resume_from_checkpoint", str(run / "checkpoint-2")]
    )
    assert summary["global_step"] == 6
    new = {step: (run / f"checkpoint-{step}" / MANIFEST).stat().st_mtime_ns for step in range(1, 7)}
    assert [step for step in old if new[step] != old[step]] == [3, 4, 5, 6]
    assert _leftovers(run) == [] and all(checkpoint_problem(p) is None for p in run.glob("checkpoint-*"))
    assert max_abs_diff(trained_state(run), trained_state(out)) == 0.0
    for step in (3, 6):
        assert (
            max_abs_diff(trained_state(run / f"checkpoint-{step}"), trained_state(out / f"checkpoint-{step}"))
            == 0.0
        )


# (kill, resume from, what the kill leaves: newest complete step and the leftover folders). A save
# publishes with 2 renames (manifest, folder), or 3 when checkpoint-N exists (manifest, old folder
# aside, new folder in); calls count from the start of each run.
RENAME_KILLS = [
    (RenameKill(3, "before"), None, 1, [".tmp-checkpoint-2"]),  # step 2: before its manifest
    (RenameKill(2, "before"), "latest", 1, [".tmp-checkpoint-2"]),  # step 2: manifest written, not renamed
    (RenameKill(7, "before"), "latest", 4, [".tmp-checkpoint-5"]),  # step 5: before its manifest
    (
        RenameKill(2, "before"),
        "checkpoint-2",
        4,
        [".tmp-checkpoint-3", ".tmp-checkpoint-5"],
    ),  # before moving 3 aside
    (
        RenameKill(3, "before"),
        "checkpoint-2",
        4,
        [".replaced-checkpoint-3", ".tmp-checkpoint-3", ".tmp-checkpoint-5"],
    ),  # between the renames
    (
        RenameKill(5, "after"),
        "checkpoint-2",
        4,
        [".replaced-checkpoint-4", ".tmp-checkpoint-5"],
    ),  # 4 in place, old not yet deleted
]


@pytest.mark.slow
def test_sigkill_at_each_publishing_step_then_latest_equals_uninterrupted(reference, tmp_path):
    """One run SIGKILLed at every step of publishing a checkpoint (before the manifest, after it,
    between the renames of replacing a newer checkpoint after an explicit older resume, after
    the last rename), resumed each time; after every kill the folder holds only complete
    `checkpoint-N`, the cut-short save's leftovers, and a resume from `latest` ends with the
    uninterrupted run's weights."""
    out, argv = reference
    run = tmp_path / "run"
    argv = _with_output_dir(argv, run)
    for i, (kill, resume, newest, leftovers) in enumerate(RENAME_KILLS):
        resume_flags = (
            []
            if resume is None
            else ["--resume_from_checkpoint", resume if resume == "latest" else str(run / resume)]
        )
        assert run_killed([*argv, *resume_flags], kill) == -signal.SIGKILL, kill
        assert (_newest_step(run), _leftovers(run)) == (newest, leftovers), kill
        assert all(checkpoint_problem(p) is None for p in run.glob("checkpoint-*")), kill
        _resumed_copy_ends_exactly(run, argv, out, tmp_path / f"probe-{i}")


@pytest.mark.slow
def test_sigkill_at_seeded_random_moments_inside_saves_then_latest_equals_uninterrupted(
    run_flags, tmp_path, record_property
):
    """A run saving every step is SIGKILLed 5 times, each inside the save of a seeded random step
    2-5 steps after the last complete checkpoint (the last kills in the second epoch, which
    starts at step 13), at a seeded random moment 0-60 ms after its temporary
    folder is created (while its files are written, or before its manifest), and resumed from
    `latest`. Every kill must cut its save short (its `.tmp-checkpoint-N` left, the newest
    complete checkpoint the one before), and every resume from `latest` must end with the
    uninterrupted run's weights (dropout on, length-grouped order, across an epoch boundary)."""
    max_steps = 16
    flags = _grouped_fusion_flags(max_steps, save_steps=1)
    reference = tmp_path / "reference"
    run_training(run_flags(reference, *flags))
    run = tmp_path / "run"
    argv = run_flags(run, *flags)
    rng = random.Random(23)
    kills = []
    for i in range(5):
        start = _newest_step(run)
        kill = TimedKill(min(start + rng.randint(2, 5), max_steps), rng.uniform(0.0, 0.06))
        resume = ["--resume_from_checkpoint", "latest"] if start else []
        assert run_killed([*argv, *resume], kill) == -signal.SIGKILL, kill
        assert _newest_step(run) == kill.step - 1, kill  # the save of kill.step was cut short
        assert f".tmp-checkpoint-{kill.step}" in _leftovers(run), kill
        assert all(checkpoint_problem(p) is None for p in run.glob("checkpoint-*")), kill
        kills.append({"step": kill.step, "delay_s": round(kill.delay, 3), "left": _leftovers(run)})
        _resumed_copy_ends_exactly(run, argv, reference, tmp_path / f"probe-{i}")
    record_property("kills", kills)
    summary, _ = run_training([*argv, "--resume_from_checkpoint", "latest"])
    assert summary["global_step"] == max_steps
    assert max_abs_diff(trained_state(run), trained_state(reference)) == 0.0


def test_resuming_a_finished_run_changes_nothing_and_says_so(reference, tmp_path, caplog):
    """A job scheduler restarting a finished job: the run is at its budget, so nothing trains,
    nothing is written, and the log says why; a larger budget is refused as another schedule."""
    out, argv = reference
    run = tmp_path / "run"
    shutil.copytree(out, run)
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()}
    recorded = json.loads((run / SUMMARY_FILE).read_text())
    for _ in range(2):
        with caplog.at_level(logging.WARNING, logger="llava.train.train"):
            summary = train_main([*_with_output_dir(argv, run), "--resume_from_checkpoint", "latest"])
        assert summary == recorded and summary["global_step"] == 6
    assert f"{run} holds a run that finished its budget (step 6): nothing left to train" in caplog.text
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()} == files
    longer = _with_output_dir(argv, run)
    longer[longer.index("--max_steps") + 1] = "8"
    with pytest.raises(ResumeMismatchError, match="--max_steps: 6 in the checkpoint, 8 now"):
        train_main([*longer, "--resume_from_checkpoint", "latest"])


def test_resuming_a_run_finished_on_an_epoch_budget_changes_nothing(run_flags, tmp_path):
    out = tmp_path / "epochs"
    argv = run_flags(out, *FUSION_FLAGS, "--num_train_epochs", "1", "--save_steps", "2")
    first, _ = run_training(argv)
    weights = (out / "adapter_model.safetensors").read_bytes()
    again = train_main([*argv, "--resume_from_checkpoint", "latest"])
    assert again == first and again["global_step"] > 0
    assert (out / "adapter_model.safetensors").read_bytes() == weights
