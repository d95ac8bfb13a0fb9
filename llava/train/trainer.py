"""`LLaVATrainer`: Hugging Face's `Trainer` with the recipe's parameter groups, modality- or
length-grouped sampling, complete checkpoints, skipped-sample counting and a stop on a non-finite loss."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from llava.data.sampler import ModalityLengthGroupedSampler
from llava.train.checkpoint import load_trained_weights, save_trained_model
from llava.train.recipe import TrainingPlan, parameter_groups

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the step was applied."""


class LLaVATrainer(Trainer):
    """Args beyond `Trainer`'s: `plan` (from `llava.train.recipe.apply_recipe`) and the tower's
    `image_processor` (saved with every checkpoint)."""

    def __init__(self, *args, plan: TrainingPlan, image_processor, **kwargs):
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.image_processor = image_processor
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
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                lengths=[abs(length) for length in dataset.modality_lengths],
                generator=torch.Generator().manual_seed(seed),
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
        from transformers.trainer_utils import get_last_checkpoint

        try:
            return get_last_checkpoint(self.args.output_dir)
        except FileNotFoundError:
            return None

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        save_trained_model(
            self.model,
            self.plan,
            output_dir or self.args.output_dir,
            self.processing_class,
            self.image_processor,
            is_main=self.args.should_save,
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
