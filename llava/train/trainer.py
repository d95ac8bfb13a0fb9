"""`LLaVATrainer`: Hugging Face's `Trainer` with the recipe's parameter groups, modality- or
length-grouped sampling, atomic and checked checkpoints, skipped-sample counting and a stop on a
non-finite loss."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from transformers import Trainer
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from llava.data.sampler import ModalityLengthGroupedSampler
from llava.train.checkpoint import load_trained_weights, save_trained_model
from llava.train.deepspeed_files import check_deepspeed_checkpoint
from llava.train.model_card import TrainingCard
from llava.train.recipe import TrainingPlan, parameter_groups
from llava.train.resume import (
    TRAINER_STATE,
    check_training_state_files,
    compare_flags,
    newest_complete_checkpoint,
    publish_checkpoint,
    read_manifest,
    resolve_resume,
    temp_folder,
)

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the step was applied."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (disk full, quota, I/O error, or another error while saving);
    the folder was not published."""


# How torch and safetensors report a write the filesystem refused (no space, quota, EFBIG).
_WRITE_FAILURE_MARKERS = ("PytorchStreamWriter failed", "unexpected pos", "file write failed", "IoError")


def is_write_failure(err: BaseException) -> bool:
    """Whether `err` is the filesystem refusing a write: an `OSError`, or torch's or safetensors'
    report of one (a `RuntimeError` / `SafetensorError` naming the failed write)."""
    return isinstance(err, OSError) or any(marker in str(err) for marker in _WRITE_FAILURE_MARKERS)


def save_failure_hint(err: BaseException) -> str:
    """What to do after a failed save: free space for a refused write, else fix the error."""
    if is_write_failure(err):
        return "Free space (or fix the I/O error) and resume with --resume_from_checkpoint latest"
    return "Fix the error and resume with --resume_from_checkpoint latest"


class EpochLengthGroupedSampler(LengthGroupedSampler):
    """Transformers' `LengthGroupedSampler` reshuffled per epoch from `seed + epoch`.

    The parent draws every epoch from one generator that advances across epochs, so a run
    resumed in epoch e >= 1 (a fresh generator) drew epoch 0's order again and drifted from the
    uninterrupted run. Here epoch e's order depends on `seed` and `e` alone.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class LLaVATrainer(Trainer):
    """Args beyond `Trainer`'s: `plan` (from `llava.train.recipe.apply_recipe`), the tower's
    `image_processor` (saved with every checkpoint), `run_flags` (the flags recorded in every
    checkpoint's manifest and compared on resume; see `llava.train.resume.RECORDED_FLAGS`) and
    `card` (the model card written with every checkpoint)."""

    def __init__(
        self,
        *args,
        plan: TrainingPlan,
        image_processor,
        run_flags: dict,
        card: TrainingCard | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.image_processor = image_processor
        self.run_flags = run_flags
        self.card = card
        self.skipped_indices: set[int] = set()
        self.optimizer_class: str | None = None  # set when the optimizer is built

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        if self.args.group_by_modality_length:
            return ModalityLengthGroupedSampler(
                dataset.modality_lengths,
                batch_size=self.args.train_batch_size,
                world_size=self.args.world_size * self.args.gradient_accumulation_steps,
                seed=seed,
            )
        if self.args.train_sampling_strategy == "group_by_length":
            # the dataset's length estimates: Trainer's own fallback would build every sample once
            return EpochLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                lengths=[abs(length) for length in dataset.modality_lengths],
                seed=seed,
            )
        return super()._get_train_sampler(train_dataset)

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        groups = parameter_groups(
            self.model,
            self.plan,
            self.args.learning_rate,
            self.args.weight_decay,
            fusion_lr=self.args.fusion_lr,
            projector_lr=self.args.mm_projector_lr,
            lora_b_lr_ratio=self.args.loraplus_lr_ratio,
        )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
        if self._offloads_optimizer():
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer_cls = DeepSpeedCPUAdam
            optimizer_kwargs = {
                "lr": self.args.learning_rate,
                "betas": (self.args.adam_beta1, self.args.adam_beta2),
                "eps": self.args.adam_epsilon,
                "adamw_mode": True,
            }
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        self.optimizer_class = optimizer_cls.__name__
        for group in groups:
            logger.info(
                "optimizer group %s: %d tensors, lr %g", group["name"], len(group["params"]), group["lr"]
            )
        return self.optimizer

    def _offloads_optimizer(self) -> bool:
        config = self.accelerator.state.deepspeed_plugin.deepspeed_config if self.is_deepspeed_enabled else {}
        device = config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
        return device not in (None, "none")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        for skipped in inputs.pop("skipped_samples", []):
            self.skipped_indices.add(skipped.index)
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        loss = result[0] if return_outputs else result
        self._check_finite(loss)
        return result

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop every rank (before the backward pass) when any rank's loss is NaN or infinite."""
        bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0], device=loss.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(bad)
        if bad.item() == 0:
            return
        last = self.state.best_model_checkpoint or self._last_checkpoint()
        raise NonFiniteLossError(
            f"non-finite loss ({loss.item()}) at step {self.state.global_step + 1}; training stopped before "
            f"applying it. Last good checkpoint: {last or 'none saved yet'}. Lower the learning rate, check "
            "the data, or use bf16 instead of fp16."
        )

    def _last_checkpoint(self) -> str | None:
        try:
            return str(newest_complete_checkpoint(self.args.output_dir))
        except FileNotFoundError:
            return None

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """`Trainer.train`, resuming only from a complete checkpoint (`latest`/`True`: the newest
        complete one) whose training state is all there and whose recorded flags equal this run's;
        under DeepSpeed its state files are checked to unpickle safely first."""
        checkpoint = resolve_resume(resume_from_checkpoint, self.args.output_dir)
        if checkpoint is not None:
            compare_flags(read_manifest(checkpoint)["flags"], self.run_flags, checkpoint)
            check_training_state_files(
                checkpoint, self.args.world_size, self.is_deepspeed_enabled, fp16=self.args.fp16
            )
            if self.is_deepspeed_enabled:
                check_deepspeed_checkpoint(checkpoint)
            logger.info("resuming from %s", checkpoint)
        return super().train(resume_from_checkpoint=checkpoint, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        """Write `checkpoint-N` atomically: every rank writes into `.tmp-checkpoint-N`; after a
        barrier the main process flushes it, writes the manifest last and renames it into place;
        then old checkpoints are rotated out (`--save_total_limit`). A failed write raises
        `CheckpointWriteError` naming the folder, and leaves no `checkpoint-N`."""
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        run_dir = Path(self._get_output_dir(trial=trial))
        final = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        temp = temp_folder(final)
        try:
            if self.args.should_save:
                shutil.rmtree(temp, ignore_errors=True)  # left by a run killed while saving
                temp.mkdir(parents=True)
            self.accelerator.wait_for_everyone()
            self._write_checkpoint_files(str(temp), run_dir)
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                publish_checkpoint(temp, final, self.run_flags, self.state.global_step)
                logger.info("checkpoint %s complete", final)
        except (OSError, RuntimeError, SafetensorError) as err:
            if self.args.should_save:
                shutil.rmtree(temp, ignore_errors=True)  # give the space back; it was never published
            raise CheckpointWriteError(
                f"could not write checkpoint {final} (step {self.state.global_step}): {err}. It was not "
                f"published; the earlier checkpoints are intact. {save_failure_hint(err)}"
            ) from err
        self.accelerator.wait_for_everyone()
        if self.args.push_to_hub:
            self._push_from_checkpoint(str(final))
        if self.args.should_save:
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    def _write_checkpoint_files(self, folder: str, run_dir: Path) -> None:
        """What `Trainer._save_checkpoint` writes (transformers 5.24), into `folder`: the weights,
        optimizer, scheduler, scaler, RNG state (every rank) and the trainer state."""
        self.save_model(folder, _internal_call=True)
        if self.state.best_global_step:
            best = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}"
            if best.exists() or self.state.best_global_step == self.state.global_step:
                self.state.best_model_checkpoint = str(best)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(folder)
            self._save_scaler(folder)
            self._save_rng_state(folder)
        if self.args.should_save:
            for callback in self.callback_handler.callbacks + [self.control]:
                if isinstance(callback, ExportableState):
                    name = callback.__class__.__name__
                    if isinstance(self.state.stateful_callbacks[name], list):
                        self.state.stateful_callbacks[name].append(callback.state())
                    else:
                        self.state.stateful_callbacks[name] = callback.state()
            self.state.save_to_json(str(Path(folder) / TRAINER_STATE))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        save_trained_model(
            self.model,
            self.plan,
            output_dir or self.args.output_dir,
            self.processing_class,
            self.image_processor,
            is_main=self.args.should_save,
            card=self.card,
        )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_trained_weights(model if model is not None else self.model, self.plan, resume_from_checkpoint)

    def skipped_count(self) -> int:
        """Samples skipped while drawing batches, over all ranks."""
        indices = sorted(self.skipped_indices)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            everyone: list[list[int]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(everyone, indices)
            return len({i for part in everyone for i in part})
        return len(indices)
