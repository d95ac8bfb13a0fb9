"""Training entry point: Inverse-LLaVA (single stage, LoRA + fusion) and the LLaVA-1.5 baseline.

    python -m llava.train.train --model_name_or_path LLM --vision_tower CLIP \\
        --model_type fusion_llama --version v1 --data_path data.json --image_folder images/ \\
        --lora_enable True --output_dir runs/x ...
    deepspeed llava/train/train_mem.py --deepspeed scripts/zero2.json ...

See docs/training.md for the flags, the recipes and the scripts under scripts/v1_5/.
"""

from __future__ import annotations

import json
import logging
import os

import torch
import transformers
from safetensors import SafetensorError
from transformers import set_seed

from llava.cli_errors import run_command
from llava.data.dataset import DataCollatorForSupervisedDataset, LazySupervisedDataset
from llava.data.packing import PaddingFreeCollator
from llava.data.preprocess import load_tokenizer
from llava.model.builder import build_from_backbones
from llava.model.compiled_fusion import compile_fusion
from llava.model.fingerprint import location_fingerprint
from llava.model.per_sample_attention import FLASH_PREFIX, padding_free_attention
from llava.model.vision_tower import load_image_processor
from llava.train.arguments import (
    DataArguments,
    FlagError,
    ModelArguments,
    RunSpec,
    TrainingArguments,
    parse_arguments,
    resolve_run,
)
from llava.train.checkpoint import gathered_parameters, load_projector
from llava.train.model_card import TrainingCard
from llava.train.recipe import TrainingPlan, apply_recipe
from llava.train.resume import (
    CONFIG_FLAGS,
    CONTENT_FLAGS,
    LOCATIONS,
    SUMMARY_FILE,
    TRAINING_FLAGS,
    clear_output_dir,
    fingerprint_key,
    finished_run,
    guard_output_dir,
    resume_requested,
    write_json_atomically,
)
from llava.train.trainer import CheckpointWriteError, LLaVATrainer, NonFiniteLossError, save_failure_hint

logger = logging.getLogger(__name__)


def _setup_logging(training_args: TrainingArguments) -> None:
    """INFO on the main process, warnings only on the others."""
    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    logging.getLogger("llava").setLevel(level)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())


def _prepare_output_dir(training_args: TrainingArguments) -> None:
    """Refuse a used `--output_dir` unless the run resumes or overwrites; with
    `--overwrite_output_dir True` the earlier run's checkpoints and model are removed first (by the
    world's main process, every other process on every node waiting: the folder is shared)."""
    used = guard_output_dir(
        training_args.output_dir,
        resuming=resume_requested(training_args.resume_from_checkpoint),
        overwrite=training_args.overwrite_output_dir,
    )
    with training_args.main_process_first(local=False, desc="clearing --output_dir"):
        if used and training_args.should_save:
            clear_output_dir(training_args.output_dir, used)


def content_fingerprints(model_args: ModelArguments, data_args: DataArguments) -> tuple[dict, dict]:
    """`(fingerprints, locations)` of the `llava.train.resume.CONTENT_FLAGS` locations: the
    recorded `<flag>_fingerprint` values (None for a flag not given) and the paths as given."""
    locations = {
        flag: getattr(data_args if flag == "data_path" else model_args, flag) for flag in CONTENT_FLAGS
    }
    fingerprints = {fingerprint_key(flag): location_fingerprint(path) for flag, path in locations.items()}
    logger.info("content fingerprints recorded for resume checks: %s", fingerprints)
    return fingerprints, locations


def recorded_flags(
    model: torch.nn.Module,
    spec: RunSpec,
    plan: TrainingPlan,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    num_samples: int,
) -> dict:
    """The flags a checkpoint records and a resume compares (`llava.train.resume.RECORDED_FLAGS`),
    as this run uses them: the template, content fingerprints of the LLM, the tower, the
    pre-trained projector and the data file, model settings from the built config, LoRA settings
    with their defaults, the schedule, the batch and the data set's usable size. The locations as
    given are recorded too (`LOCATIONS`, for messages; not compared)."""
    config = model.config
    fingerprints, locations = content_fingerprints(model_args, data_args)
    flags = {flag: getattr(config, field, None) for flag, field in CONFIG_FLAGS.items()}
    flags.update(fingerprints)
    flags[LOCATIONS] = locations
    flags.update({name: getattr(training_args, name) for name in TRAINING_FLAGS})
    lora = spec.lora or {}
    flags.update(
        model_type=spec.model_type,
        version=model_args.version,
        lora_r=lora.get("lora_r"),
        lora_alpha=lora.get("lora_alpha"),
        lora_dropout=lora.get("lora_dropout"),
        lora_layer_ids_to_skip=lora.get("skip_layers"),
        trained_groups={group: len(names) for group, names in plan.groups.items()},
        optim=str(training_args.optim),
        lr_scheduler_type=str(training_args.lr_scheduler_type),
        train_sampling_strategy=str(training_args.train_sampling_strategy),
        num_samples=num_samples,
        deepspeed=training_args.deepspeed is not None,
    )
    if training_args.max_steps > 0:  # the epoch count does not set the budget then
        flags["num_train_epochs"] = None
    return json.loads(json.dumps(flags, default=str))


def _partitioned_count(model: torch.nn.Module) -> int:
    """Parameters ZeRO-3 has partitioned away from this rank (local numel 0)."""
    return sum(1 for p in model.parameters() if hasattr(p, "ds_id") and p.numel() == 0)


def seeded_init(model: torch.nn.Module, names: list[str], seed: int) -> None:
    """Initialise the parameters the backbones did not provide (fusion branch, projector) from
    `seed` alone, with the model's own `_init_weights`.

    A run then starts from the same weights with or without ZeRO-3, whose partitioned
    construction draws random numbers in another order.
    """
    wanted = set(names)
    owners: dict[str, torch.nn.Module] = {}
    targets: list[torch.nn.Parameter] = []
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if f"{module_name}.{param_name}" in wanted:
                owners[module_name] = module
                targets.append(param)
                param._is_hf_initialized = False  # let transformers' init functions write it again
        if module_name in owners:
            module._is_hf_initialized = False
    if not targets:
        return
    with gathered_parameters(targets, modifier_rank=0):
        torch.manual_seed(seed)
        for name in sorted(owners):
            model._init_weights(owners[name])


def _save_final_model(trainer: LLaVATrainer, output_dir: str) -> None:
    """The trainer state and the finished model into `output_dir` (`training_summary.json`, written
    after it, marks it finished); a failed write names the folder."""
    try:
        trainer.save_state()
        trainer.save_model(output_dir)
    except (OSError, RuntimeError, SafetensorError) as err:
        raise CheckpointWriteError(
            f"could not write the finished model to {output_dir}: {err}. Its checkpoints are intact. "
            f"{save_failure_hint(err)}"
        ) from err


def train(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    callbacks: list | None = None,
    default_attn_implementation: str | None = None,
    argv: list[str] | None = None,
) -> dict:
    """Build the model, apply the recipe, train, save; returns the run summary (also written to
    `output_dir/training_summary.json`). `argv`: the flags the run was given, for the model card
    (None: this process's command line)."""
    _setup_logging(training_args)
    spec = resolve_run(model_args, data_args, training_args)
    if resume_requested(training_args.resume_from_checkpoint):
        finished = finished_run(
            training_args.output_dir, training_args.max_steps, training_args.num_train_epochs
        )
        if finished is not None:
            logger.warning(
                "%s holds a run that finished its budget (step %d): nothing left to train, its model is "
                "left as it is. A larger budget is another schedule: start it in another --output_dir",
                training_args.output_dir,
                finished["global_step"],
            )
            return finished
    _prepare_output_dir(training_args)
    set_seed(training_args.seed)
    dtype = torch.bfloat16 if training_args.bf16 else torch.float32
    model, report = build_from_backbones(
        spec.model_type,
        model_args.model_name_or_path,
        model_args.vision_tower,
        dtype=dtype,
        attn_implementation=model_args.attn_implementation or default_attn_implementation,
        **spec.config_fields,
    )
    seeded_init(model, report.missing, training_args.seed)
    if model_args.pretrain_mm_mlp_adapter:
        load_projector(model, model_args.pretrain_mm_mlp_adapter)
    model.config.use_cache = False
    if training_args.padding_free:
        _use_padding_free_attention(model)
    tokenizer = load_tokenizer(model_args.model_name_or_path, training_args.model_max_length)
    image_processor = load_image_processor(model_args.vision_tower)
    model, plan = apply_recipe(model, spec)
    if training_args.compile_fusion:
        _compile_fusion(model, training_args)

    dataset = LazySupervisedDataset(
        data_args.data_path,
        tokenizer,
        image_processor,
        template=model_args.version,
        image_folder=data_args.image_folder,
        image_aspect_ratio=model.config.image_aspect_ratio,
        model_max_length=training_args.model_max_length,
        num_image_tokens=model.config.num_image_tokens,
        strict=data_args.strict_data,
    )
    trainer = LLaVATrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=(
            PaddingFreeCollator()
            if training_args.padding_free
            else DataCollatorForSupervisedDataset(pad_token_id=tokenizer.pad_token_id)
        ),
        processing_class=tokenizer,
        callbacks=callbacks,
        plan=plan,
        image_processor=image_processor,
        run_flags=recorded_flags(model, spec, plan, model_args, data_args, training_args, len(dataset)),
        card=TrainingCard.from_argv(argv, model_args.model_name_or_path, model_args.vision_tower),
    )
    try:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    except NonFiniteLossError as err:
        logger.error("%s", err)
        raise
    _save_final_model(trainer, training_args.output_dir)

    skipped_at_load = trainer.skipped_count()
    summary = {
        "model_type": spec.model_type,
        "world_size": training_args.world_size,
        "deepspeed_enabled": trainer.is_deepspeed_enabled,
        "zero_stage": (
            trainer.accelerator.state.deepspeed_plugin.zero_stage if trainer.is_deepspeed_enabled else None
        ),
        "partitioned_parameters": _partitioned_count(trainer.model),
        "optimizer": trainer.optimizer_class,
        "newly_initialised": report.missing,
        "trained_groups": {group: len(names) for group, names in plan.groups.items()},
        "lora_targets": plan.lora_targets,
        "skipped_samples": dataset.rejected_at_start + skipped_at_load,
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
    }
    if summary["skipped_samples"]:
        logger.warning("skipped %d bad sample(s) of %s", summary["skipped_samples"], data_args.data_path)
    if training_args.should_save:  # written last: a finished model's completion marker
        write_json_atomically(os.path.join(training_args.output_dir, SUMMARY_FILE), summary)
    return summary


def _use_padding_free_attention(model) -> None:
    """`--padding_free True` computes attention within each sample: flash-attention's varlen path
    as it is, SDPA replaced by the same kernel run per sample (`llava.model.per_sample_attention`);
    eager, asked for by name, stays and computes the whole packed row."""
    chosen = model.config._attn_implementation
    attention = padding_free_attention(chosen)
    if attention != chosen:
        model.set_attn_implementation(attention)
        logger.info("--padding_free True: %s attention computed per sample (%s)", chosen, attention)
    elif not attention.startswith(FLASH_PREFIX):
        logger.warning(
            "--padding_free True under %s attention: exact, but its packed-sequence mask makes attention "
            "compute the whole packed row (S x S positions); sdpa and flash_attention_2 compute each "
            "sample's own block (see docs/performance.md)",
            attention,
        )


def _compile_fusion(model, training_args: TrainingArguments) -> None:
    """`--compile_fusion True`: the fusion layers compiled in place (`llava.model.compiled_fusion`).
    Refused under ZeRO-3, whose hooks gather a module's parameters inside the call it would compile
    (not supported, not tested)."""
    if training_args.deepspeed and training_args.hf_deepspeed_config.is_zero3():
        raise FlagError("--compile_fusion True does not apply under DeepSpeed ZeRO-3 (use ZeRO-2 or none)")
    compile_fusion(model)


def main(argv: list[str] | None = None, default_attn_implementation: str | None = None) -> dict:
    """Parse `argv` (default: the command line) and train; returns the run summary. A user's
    mistake (a used `--output_dir`, a resume that does not match its checkpoint, a flag whose
    optional extra is not installed, ...) raises a `llava.cli_errors.UserError`, on which the
    command ends with its one-line message (exit code 2)."""
    model_args, data_args, training_args = parse_arguments(argv)
    return train(
        model_args,
        data_args,
        training_args,
        default_attn_implementation=default_attn_implementation,
        argv=argv,
    )


if __name__ == "__main__":
    run_command(main)
