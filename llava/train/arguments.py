"""Command-line arguments of `python -m llava.train.train`: LLaVA-1.5's flags and the Inverse-LLaVA
release's fusion flags, spelled as users know them.

The release's comma-string flags (`--fusion_targets 'q,k,v'`, `--layer_ids_to_inject '0'`,
`--lora_layer_ids_to_skip '0'`, `--mm_vision_select_layer "-1,-2"`) are parsed here, once, into
typed values (`resolve_run`). A flag the user sets is honoured or rejected with an error naming
it; flags that do not apply to the chosen model or recipe are never silently ignored.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass, field

import transformers
from transformers import HfArgumentParser

from llava.cli_errors import UserError
from llava.conversation import conv_templates
from llava.data.preprocess import DEFAULT_MODEL_MAX_LENGTH
from llava.extras import require_extra
from llava.model.configuration import RELEASE_VARIANTS

logger = logging.getLogger(__name__)

COMMA_FLAGS = ("mm_vision_select_layer", "layer_ids_to_inject", "lora_layer_ids_to_skip", "fusion_targets")
FUSION_FLAGS = (
    "fusion_variant",
    "fusion_alpha",
    "fusion_hidden_dim",
    "fusion_dropout",
    "fusion_targets",
    "layer_ids_to_inject",
    "stable_fusion",
    "vision_stream_norm",
)
# The release's flags that its own fusion layers ignore: accepted, with a warning, on a run that
# trains one of those layers, so its command lines run verbatim (docs/model.md).
RELEASE_NO_EFFECT = {
    "pretrain_mm_mlp_adapter": "the release's fusion model has no projector",
    "mm_projector_type": "the release's fusion model has no projector (--use_mm_proj False)",
    "mm_projector_lr": "the release's fusion model has no projector",
    "fusion_dropout": "the release's layers have no dropout",
    "fusion_hidden_dim": "the release's layers have no hidden width of their own",
}
PROJECTOR_FLAGS = ("mm_projector_type", "pretrain_mm_mlp_adapter")
LORA_FLAGS = ("lora_r", "lora_alpha", "lora_dropout", "lora_layer_ids_to_skip", "loraplus_lr_ratio")
# LLaVA's defaults for LoRA when the flags are not given.
LORA_DEFAULTS = {"lora_r": 64, "lora_alpha": 16, "lora_dropout": 0.05}
# The --report_to integrations of the dev extra: the package each needs (or its alternatives).
REPORTERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


class FlagError(UserError, ValueError):
    """A flag whose value is out of range or unknown, or that does not apply to the chosen model or
    recipe (or to the other flags given)."""


def _unset(help_text: str):
    """A flag that is None unless given, so that a given value can be told from a default (and
    refused where it does not apply); `help_text` names the default that applies when it is unset."""
    return field(default=None, metadata={"help": help_text})


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "The base LLM (folder or hub id)."})
    vision_tower: str = field(
        metadata={
            "help": "The vision tower: a CLIP or SigLIP folder or hub id, or an OpenCLIP tower "
            "(local-dir:FOLDER, hf-hub:ORG/NAME or open_clip:MODEL,PRETRAINED; the openclip extra)."
        }
    )
    version: str = field(default="v1", metadata={"help": f"Conversation template: {sorted(conv_templates)}."})
    model_type: str | None = _unset(
        "fusion_llama (Inverse-LLaVA) or llava_llama (LLaVA-1.5 baseline). (default: what "
        "--use_vision_fusion / --use_mm_proj say, else llava_llama)"
    )
    use_vision_fusion: bool | None = _unset("True selects fusion_llama (release flag).")
    use_mm_proj: bool | None = _unset("True selects llava_llama (release flag).")
    fusion_variant: str | None = _unset(
        "concat (paper), add, gated, mlp, the release's release_mlp / release_stable, or published (the "
        "layer of the authors' published 7B model). (default: concat)"
    )
    fusion_alpha: float | None = _unset("Initial per-target fusion scale. (default: 1.0)")
    fusion_hidden_dim: int | None = _unset("Hidden width; mlp variant only. (default: the LLM's hidden size)")
    fusion_dropout: float | None = _unset(
        "Dropout on the fusion input. (default: 0.1; 0 for the release's and the published layers)"
    )
    fusion_targets: str | None = _unset("Comma list among q,k,v. (default: q,k,v)")
    layer_ids_to_inject: str | None = _unset("Comma list of fusion layers. (default: 0)")
    stable_fusion: bool | None = _unset(
        "The release's layer choice: False its default layer (release_mlp), True release_stable."
    )
    vision_stream_norm: bool | None = _unset(
        "RMSNorm the vision stream; this project's variants. (default: False)"
    )
    save_only: bool | None = _unset("Accepted from the release; no effect.")
    mm_hidden_size: int | None = _unset("Vision width d_v, checked against the tower. (default: derived)")
    mm_vision_select_layer: str | None = _unset(
        "Tower layer(s), comma list; -1,-2 for the HD variant. (default: -1 for fusion_llama, "
        "-2 for llava_llama)"
    )
    mm_vision_select_feature: str | None = _unset("patch or cls_patch. (default: patch)")
    mm_projector_type: str | None = _unset("linear, mlp2x_gelu, ... (baseline). (default: mlp2x_gelu)")
    tune_mm_mlp_adapter: bool = field(
        default=False, metadata={"help": "LLaVA stage 1: train the projector only."}
    )
    pretrain_mm_mlp_adapter: str | None = _unset(
        "A stage-1 mm_projector.safetensors (or its folder) to start from."
    )
    freeze_backbone: bool = field(default=False, metadata={"help": "Without LoRA: keep the LLM frozen."})
    mm_use_im_start_end: bool = field(default=False, metadata={"help": "Unsupported (False only)."})
    mm_use_im_patch_token: bool = field(default=False, metadata={"help": "Unsupported (False only)."})
    attn_implementation: str | None = _unset(
        "eager, sdpa or flash_attention_2. (default: train_mem.py's choice, else the library's)"
    )


@dataclass
class DataArguments:
    data_path: str = field(metadata={"help": "LLaVA-format JSON (or JSON-lines) file."})
    image_folder: str | None = _unset("Folder the records' images are in.")
    image_aspect_ratio: str | None = _unset("pad, resize or square. (default: pad)")
    lazy_preprocess: bool = field(
        default=True, metadata={"help": "Tokenise when a sample is drawn (True only)."}
    )
    strict_data: bool = field(
        default=False, metadata={"help": "Stop at the first bad sample instead of skipping."}
    )


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    model_max_length: int = field(
        default=DEFAULT_MODEL_MAX_LENGTH, metadata={"help": "Maximum positions, image positions included."}
    )
    lora_enable: bool = field(default=False, metadata={"help": "LoRA on the LLM's linear layers."})
    lora_r: int | None = _unset(f"LoRA rank. (default: {LORA_DEFAULTS['lora_r']})")
    lora_alpha: int | None = _unset(f"LoRA alpha. (default: {LORA_DEFAULTS['lora_alpha']})")
    lora_dropout: float | None = _unset(f"LoRA dropout. (default: {LORA_DEFAULTS['lora_dropout']})")
    lora_layer_ids_to_skip: str | None = _unset(
        "Comma list of layers without LoRA. (default: the fusion layers)"
    )
    loraplus_lr_ratio: float | None = _unset(
        "LoRA+: LoRA's B matrices learn at this multiple of the rate. (default: off)"
    )
    mm_projector_lr: float | None = _unset("Learning rate of the projector. (default: --learning_rate)")
    fusion_lr: float | None = _unset("Learning rate of the fusion parameters. (default: --learning_rate)")
    group_by_modality_length: bool = field(
        default=False, metadata={"help": "Single-modality length-grouped steps."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the samples' fields (the collator builds the model inputs)."}
    )
    padding_free: bool = field(
        default=False,
        metadata={
            "help": "Concatenate each micro-batch's samples into one row (no padding; attention and "
            "positions per sample). The same samples per step and the same loss and gradients as padding."
        },
    )
    compile_fusion: bool | None = _unset("torch.compile the fusion layers only. (default: off)")
    warmup_ratio: float | None = _unset("LLaVA's spelling of a fractional --warmup_steps (e.g. 0.03).")
    evaluation_strategy: str | None = _unset("LLaVA's spelling of --eval_strategy (transformers' old name).")
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start a new run in a --output_dir that holds an earlier one (its checkpoint-N folders and "
            "model are deleted first). Without it, a used --output_dir is refused unless the run resumes."
        },
    )

    def _check_numeric_flags(self) -> None:
        """Reject values that would train something other than what the flag says, naming the flag."""
        if self.lora_r is not None and not self.lora_r >= 1:
            raise FlagError(f"--lora_r {self.lora_r}: expected a rank of at least 1")
        if self.lora_alpha is not None and not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            raise FlagError(
                f"--lora_alpha {self.lora_alpha}: expected a positive number (LoRA's update is scaled by "
                "alpha / r, so 0 disables it)"
            )
        if self.lora_dropout is not None and not 0.0 <= self.lora_dropout < 1.0:
            raise FlagError(f"--lora_dropout {self.lora_dropout}: expected a probability in [0, 1)")
        if self.loraplus_lr_ratio is not None and not self.loraplus_lr_ratio > 0:
            raise FlagError(f"--loraplus_lr_ratio {self.loraplus_lr_ratio}: expected a positive multiple")
        for name in ("learning_rate", "fusion_lr", "mm_projector_lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise FlagError(f"--{name} {value}: expected a finite rate >= 0")
        if not self.model_max_length >= 1:
            raise FlagError(f"--model_max_length {self.model_max_length}: expected at least 1 position")

    def _check_extras(self) -> None:
        """--deepspeed and the --report_to integrations need packages of optional extras; a missing
        one is named with its extra here, before transformers reports it in its own words."""
        if self.deepspeed:
            require_extra("--deepspeed", "train", "deepspeed")
        for name in [self.report_to] if isinstance(self.report_to, str) else self.report_to or []:
            if name in REPORTERS:
                require_extra(f"--report_to {name}", "dev", *REPORTERS[name])

    def __post_init__(self):
        if self.warmup_ratio is not None:
            if self.warmup_steps:
                raise FlagError("give --warmup_ratio or --warmup_steps, not both")
            if not 0.0 <= self.warmup_ratio < 1.0:
                raise FlagError(f"--warmup_ratio {self.warmup_ratio}: expected a fraction in [0, 1)")
            self.warmup_steps = self.warmup_ratio
        if self.evaluation_strategy is not None:
            if self.eval_strategy != "no":
                raise FlagError("give --evaluation_strategy (LLaVA's spelling) or --eval_strategy, not both")
            self.eval_strategy = self.evaluation_strategy
        self._check_numeric_flags()
        self._check_extras()
        if self.save_on_each_node:
            raise FlagError(
                "--save_on_each_node True is not supported: every rank writes its part of a checkpoint into "
                "one folder on a filesystem all ranks share, and one process (the world's main one) "
                "publishes it; with a publisher per node, several would rename the same folder. Put "
                "--output_dir on a shared filesystem and drop the flag"
            )
        super().__post_init__()
        if self.activation_checkpointing and not self.activation_checkpointing_kwargs:
            # Non-reentrant checkpointing gives the fusion (and LoRA) parameters their gradients
            # although the frozen embeddings' outputs do not require grad.
            self.activation_checkpointing_kwargs = {"use_reentrant": False}


@dataclass
class RunSpec:
    """The parsed, checked run: which model, its config fields, and what trains."""

    model_type: str
    config_fields: dict
    lora: dict | None  # r, alpha, dropout, skip_layers; None without LoRA
    projector_only: bool
    freeze_backbone: bool


def _flag_list(value: str, flag: str, cast):
    if cast is int and value.strip().lower() == "none" and flag == "lora_layer_ids_to_skip":
        return []
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise FlagError(f"--{flag} {value!r}: expected a comma-separated list")
    try:
        return [cast(item) for item in items]
    except ValueError:
        raise FlagError(f"--{flag} {value!r}: cannot read {cast.__name__} values from it") from None


def _reject(args, names, why: str) -> None:
    given = [f"--{n}" for n in names if getattr(args, n) is not None]
    if given:
        raise FlagError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply: {why}")


def _model_type(model_args: ModelArguments) -> str:
    chosen = model_args.model_type
    if chosen is not None and chosen not in ("fusion_llama", "llava_llama"):
        raise FlagError(f"--model_type {chosen!r}: expected fusion_llama or llava_llama")
    implied = set()
    if model_args.use_vision_fusion is not None:
        implied.add("fusion_llama" if model_args.use_vision_fusion else "llava_llama")
    if model_args.use_mm_proj is not None:
        implied.add("llava_llama" if model_args.use_mm_proj else "fusion_llama")
    if chosen is not None:
        implied.add(chosen)
    if len(implied) > 1:
        raise FlagError(
            f"--model_type {chosen}, --use_vision_fusion {model_args.use_vision_fusion} and --use_mm_proj "
            f"{model_args.use_mm_proj} disagree: Inverse-LLaVA is fusion_llama (fusion, no projector), "
            "LLaVA-1.5 is llava_llama (projector, no fusion)"
        )
    return implied.pop() if implied else "llava_llama"


def _fusion_variant(model_args: ModelArguments) -> str | None:
    """`--fusion_variant`, or the release's spelling of its layer choice, `--stable_fusion`."""
    if model_args.stable_fusion is None:
        return model_args.fusion_variant
    if model_args.fusion_variant is not None:
        raise FlagError(
            f"--stable_fusion {model_args.stable_fusion} and --fusion_variant {model_args.fusion_variant} both "
            "choose the fusion layer: --stable_fusion (the release's spelling) selects release_stable (True) or "
            "release_mlp (False); give one of the two"
        )
    variant = "release_stable" if model_args.stable_fusion else "release_mlp"
    logger.info(
        "--stable_fusion %s: the release's %s layer (see docs/model.md)", model_args.stable_fusion, variant
    )
    return variant


def _drop_release_no_effect_flags(
    model_args: ModelArguments, training_args: TrainingArguments, variant: str
) -> None:
    """One warning per release flag that has no effect on the release's layers, then unset it."""
    for name, why in RELEASE_NO_EFFECT.items():
        owner = training_args if name == "mm_projector_lr" else model_args
        value = getattr(owner, name)
        if value is not None:
            logger.warning("--%s %s has no effect on the release's %s layer: %s", name, value, variant, why)
            setattr(owner, name, None)


def resolve_run(
    model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> RunSpec:
    """Check the flags against each other and turn them into typed config fields and a recipe."""
    if model_args.version not in conv_templates:
        raise FlagError(
            f"--version {model_args.version!r}: unknown template; known: {sorted(conv_templates)}"
        )
    if model_args.mm_use_im_start_end or model_args.mm_use_im_patch_token:
        raise FlagError(
            "--mm_use_im_start_end / --mm_use_im_patch_token True are not supported (LLaVA-1.5 uses False)"
        )
    if not data_args.lazy_preprocess:
        raise FlagError("--lazy_preprocess False is not supported: samples are always tokenised when drawn")
    model_type = _model_type(model_args)
    if model_args.save_only is not None:
        logger.warning(
            "--save_only %s is accepted from the release's scripts and has no effect", model_args.save_only
        )
    fields: dict = {}
    if model_args.mm_vision_select_layer is not None:
        fields["mm_vision_select_layer"] = _flag_list(
            model_args.mm_vision_select_layer, "mm_vision_select_layer", int
        )
    for name in ("mm_vision_select_feature", "mm_hidden_size"):
        if getattr(model_args, name) is not None:
            fields[name] = getattr(model_args, name)
    if data_args.image_aspect_ratio is not None:
        fields["image_aspect_ratio"] = data_args.image_aspect_ratio

    if model_type == "fusion_llama":
        variant = _fusion_variant(model_args)
        if variant in RELEASE_VARIANTS:
            _drop_release_no_effect_flags(model_args, training_args, variant)
        _reject(model_args, PROJECTOR_FLAGS, "Inverse-LLaVA (fusion_llama) has no projector")
        _reject(training_args, ("mm_projector_lr",), "Inverse-LLaVA (fusion_llama) has no projector")
        if model_args.tune_mm_mlp_adapter:
            raise FlagError(
                "--tune_mm_mlp_adapter does not apply: Inverse-LLaVA has no projector to pre-train"
            )
        if variant is not None:
            fields["fusion_variant"] = variant
        for name in ("fusion_alpha", "fusion_hidden_dim", "fusion_dropout", "vision_stream_norm"):
            if getattr(model_args, name) is not None:
                fields[name] = getattr(model_args, name)
        if model_args.fusion_targets is not None:
            fields["fusion_targets"] = _flag_list(model_args.fusion_targets, "fusion_targets", str)
        if model_args.layer_ids_to_inject is not None:
            fields["fusion_layer_ids"] = _flag_list(
                model_args.layer_ids_to_inject, "layer_ids_to_inject", int
            )
    else:
        _reject(model_args, FUSION_FLAGS, "the LLaVA-1.5 baseline (llava_llama) has no fusion layers")
        _reject(
            training_args,
            ("fusion_lr", "compile_fusion"),
            "the LLaVA-1.5 baseline (llava_llama) has no fusion layers",
        )
        if model_args.mm_projector_type is not None:
            fields["mm_projector_type"] = model_args.mm_projector_type
        if model_args.tune_mm_mlp_adapter and model_args.pretrain_mm_mlp_adapter:
            raise FlagError(
                "--tune_mm_mlp_adapter trains a projector from scratch; drop --pretrain_mm_mlp_adapter"
            )

    lora = None
    if training_args.lora_enable:
        if model_args.tune_mm_mlp_adapter:
            raise FlagError(
                "--lora_enable does not apply to --tune_mm_mlp_adapter (stage 1 trains the projector only)"
            )
        if model_args.freeze_backbone:
            raise FlagError(
                "--freeze_backbone does not apply with --lora_enable (LoRA already freezes the LLM)"
            )
        lora = {
            name: default if getattr(training_args, name) is None else getattr(training_args, name)
            for name, default in LORA_DEFAULTS.items()
        }
        if training_args.lora_layer_ids_to_skip is not None:
            lora["skip_layers"] = _flag_list(
                training_args.lora_layer_ids_to_skip, "lora_layer_ids_to_skip", int
            )
        else:
            lora["skip_layers"] = fields.get("fusion_layer_ids", [0]) if model_type == "fusion_llama" else []
    else:
        _reject(training_args, LORA_FLAGS, "LoRA is off (add --lora_enable True)")
    return RunSpec(
        model_type=model_type,
        config_fields=fields,
        lora=lora,
        projector_only=model_args.tune_mm_mlp_adapter,
        freeze_backbone=model_args.freeze_backbone,
    )


def _join_comma_flags(argv: list[str]) -> list[str]:
    """`--flag -1,-2` -> `--flag=-1,-2`: argparse takes a value starting with '-' for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and arg[2:].replace("-", "_") in COMMA_FLAGS and i + 1 < len(argv):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows each flag's default once: a flag whose field defaults to None (unset, so that
    a given value can be told from a default) names its effective default in its own help text."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def parse_arguments(argv: list[str] | None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Parse the command line (or `argv`); unknown flags are an error."""
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, TrainingArguments), formatter_class=_HelpFormatter
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(
        args=_join_comma_flags(argv), return_remaining_strings=False
    )
    return model_args, data_args, training_args
