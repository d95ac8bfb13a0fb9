"""Loading models: from pre-trained backbones (training) and from checkpoints (inference).

What a checkpoint is, is decided from its own files, never from its folder's name:

| files in `model_path`                                   | meaning                         |
|---------------------------------------------------------|---------------------------------|
| `model.safetensors` (or an index)                       | complete (or merged) model      |
| `adapter_config.json` (+ `non_lora_trainables.safetensors`) | LoRA run: needs `model_base` |
| `mm_projector.safetensors`, no model weights            | LLaVA stage 1: needs `model_base` |

What a load guarantees (see docs/model.md, "Loading: what is checked"): every parameter holds a
value read from a file, except those `build_from_backbones` reports as newly initialised; a LoRA
folder of a multimodal model must hold `non_lora_trainables.safetensors`; every tensor copied by
hand is shape-checked; locations are resolved by `llava.model.paths.resolve_location`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, CLIPVisionConfig, LlamaForCausalLM

from llava.model.configuration import FusionLlamaConfig, LlavaLlamaConfig, MultimodalLlamaConfig
from llava.model.fusion_llama import FusionLlamaForCausalLM
from llava.model.llava_llama import LlavaLlamaForCausalLM
from llava.model.paths import resolve_location
from llava.model.vision_tower import load_image_processor

logger = logging.getLogger(__name__)

MODEL_CLASSES = {
    "fusion_llama": (FusionLlamaConfig, FusionLlamaForCausalLM),
    "llava_llama": (LlavaLlamaConfig, LlavaLlamaForCausalLM),
}
NON_LORA_TRAINABLES = "non_lora_trainables.safetensors"
MM_PROJECTOR = "mm_projector.safetensors"
_TOWER_PREFIX = "model.vision_tower."
_CONFIG_KEYS_DROPPED = (
    "model_type",
    "architectures",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "auto_map",
)


@dataclass
class LoadReport:
    """What a load did with the parameters its first checkpoint (the base) did not provide.

    `missing`: newly initialised, no file gave them a value; `loaded`: file or folder -> the
    parameters read from it on top of the base; `unexpected`: base keys without a parameter.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    loaded: dict[str, list[str]] = field(default_factory=dict)

    def record(self, source: str | Path, names: list[str]) -> None:
        """`names` were read from `source`: they are no longer newly initialised."""
        self.loaded[str(source)] = sorted(names)
        self.missing = sorted(set(self.missing) - set(names))

    def describe(self) -> str:
        loaded = "; ".join(f"{len(names)} tensor(s) from {src}" for src, names in self.loaded.items())
        return (
            f"loaded on top of the base: {loaded or 'nothing'}; newly initialised: {self.missing or 'none'}"
        )


def _from_pretrained(model_cls, folder: str | Path, **kwargs) -> tuple[torch.nn.Module, LoadReport]:
    """`model_cls.from_pretrained(folder)` and its report; a tensor whose shape disagrees with
    the config is an error naming the key, the folder and both shapes (never re-initialised).

    Quantized loads (CUDA and bitsandbytes only, not exercised by the CPU tests) keep
    transformers' own check, which also raises on a mismatch, pointing at its load report.
    """
    quantized = kwargs.get("quantization_config") is not None
    model, info = model_cls.from_pretrained(
        folder, output_loading_info=True, ignore_mismatched_sizes=not quantized, **kwargs
    )
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched:
        details = "; ".join(
            f"{key}: checkpoint {tuple(theirs)} vs model {tuple(mine)}"
            for key, theirs, mine in mismatched[:5]
        )
        raise ValueError(
            f"{folder}: {len(mismatched)} tensor(s) have another shape than the config gives them "
            f"({details}); was it saved with other settings (e.g. fusion_targets, fusion_layer_ids)?"
        )
    report = LoadReport(missing=sorted(info["missing_keys"]), unexpected=sorted(info["unexpected_keys"]))
    return model, report


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str | torch.device) -> torch.dtype:
    """fp32 on CPU; bf16 on GPUs that support it, else fp16."""
    if torch.device(device).type == "cpu":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def multimodal_config_from_backbones(
    model_type: str, llm_path: str, vision_tower: str, **fields
) -> MultimodalLlamaConfig:
    """The config of a new multimodal model: the LLM's architecture, the tower's, and `fields`."""
    if model_type not in MODEL_CLASSES:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {sorted(MODEL_CLASSES)}")
    config_cls, _ = MODEL_CLASSES[model_type]
    llm_config = AutoConfig.from_pretrained(resolve_location(llm_path, "LLM")).to_dict()
    for key in _CONFIG_KEYS_DROPPED:
        llm_config.pop(key, None)
    vision_config = CLIPVisionConfig.from_pretrained(resolve_location(vision_tower, "vision tower")).to_dict()
    return config_cls(**llm_config, vision_config=vision_config, mm_vision_tower=vision_tower, **fields)


def build_from_backbones(
    model_type: str,
    llm_path: str,
    vision_tower: str,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    **config_fields,
) -> tuple[FusionLlamaForCausalLM | LlavaLlamaForCausalLM, LoadReport]:
    """A new `fusion_llama` or `llava_llama` model from a pre-trained LLM and a CLIP tower.

    Returns the model and what was newly initialised: exactly the fusion parameters (or the
    projector), since the LLM and the tower come from their checkpoints.
    """
    config = multimodal_config_from_backbones(model_type, llm_path, vision_tower, **config_fields)
    _, model_cls = MODEL_CLASSES[model_type]
    model, report = _from_pretrained(
        model_cls,
        resolve_location(llm_path, "LLM"),
        config=config,
        dtype=dtype or torch.float32,
        attn_implementation=attn_implementation,
    )
    model.get_vision_tower().load_pretrained_weights(vision_tower)
    report.record(vision_tower, _tower_parameter_names(model))
    logger.info("built %s from %s + %s; %s", model_type, llm_path, vision_tower, report.describe())
    return model, report


def _local_folder(location: str, what: str) -> Path:
    """A local folder, or the hub snapshot of an `org/name` id (see `resolve_location`)."""
    resolved = resolve_location(location, what)
    if Path(resolved).is_dir():
        return Path(resolved)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(resolved))


def _has_weights(path: Path) -> bool:
    return any((path / name).exists() for name in ("model.safetensors", "model.safetensors.index.json"))


def _load_tokenizer(model_path: Path, model_base: Path | None):
    source = model_path if (model_path / "tokenizer_config.json").exists() else model_base
    if source is None:
        raise FileNotFoundError(f"no tokenizer in {model_path} and no --model-base to take one from")
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        logger.info("the tokenizer has no pad token; padding with its unk token %r", tokenizer.unk_token)
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def copy_checked(target: torch.Tensor, value: torch.Tensor, key: str, source: str | Path) -> None:
    """`target.copy_(value)` in `target`'s dtype, refusing a shape mismatch (no broadcasting).

    Raises:
        ValueError: naming `source` (the file), `key` and both shapes.
    """
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(
            f"{source}: {key} has shape {tuple(value.shape)}, but the model's parameter has shape "
            f"{tuple(target.shape)} (was the checkpoint trained with another config?)"
        )
    with torch.no_grad():
        target.copy_(value.to(target.dtype))


def _load_safetensors_into(model: torch.nn.Module, path: Path) -> list[str]:
    """Load a partial state dict (trained non-LoRA weights), insisting every key lands with its
    shape; returns the names loaded."""
    state = load_file(str(path))
    params = dict(model.named_parameters())
    unknown = sorted(k for k in state if k not in params)
    if unknown:
        raise KeyError(f"{path}: {len(unknown)} key(s) match no parameter of the model, e.g. {unknown[:3]}")
    for key, value in state.items():
        copy_checked(params[key], value, key, path)
    logger.info("loaded %d tensors from %s", len(state), path)
    return list(state)


def _checkpoint_keys(path: Path) -> set[str]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        return set(json.loads(index.read_text())["weight_map"])
    single = path / "model.safetensors"
    if not single.exists():
        return set()
    with safe_open(str(single), framework="pt") as f:
        return set(f.keys())


def _tower_parameter_names(model) -> list[str]:
    return [name for name, _ in model.named_parameters() if name.startswith(_TOWER_PREFIX)]


def _ensure_vision_tower(model, checkpoint: Path, report: LoadReport) -> None:
    """Load the tower from `config.mm_vision_tower` unless `checkpoint` carries its weights
    (all of them: a checkpoint holding part of the tower is an error)."""
    wanted = set(_tower_parameter_names(model))
    present = {k for k in _checkpoint_keys(checkpoint) if k.startswith(_TOWER_PREFIX)}
    if present:
        absent = sorted(wanted - present)
        if absent:
            raise KeyError(
                f"{checkpoint} holds {len(present & wanted)} of the vision tower's {len(wanted)} weights; "
                f"missing e.g. {absent[:3]}"
            )
        return
    tower = model.config.mm_vision_tower
    if not tower:
        raise ValueError(
            f"{checkpoint} holds no vision tower weights and its config names no mm_vision_tower"
        )
    model.get_vision_tower().load_pretrained_weights(tower)
    report.record(tower, sorted(wanted))


def _require_non_lora_trainables(path: Path, config) -> None:
    """A LoRA run of a multimodal model keeps its trained fusion branch / projector (everything
    trained that is not LoRA) in `non_lora_trainables.safetensors`; without it they would be
    merged untrained."""
    if not isinstance(config, MultimodalLlamaConfig) or (path / NON_LORA_TRAINABLES).exists():
        return
    trained = "fusion branch" if config.model_type == "fusion_llama" else "projector"
    raise FileNotFoundError(
        f"{path / NON_LORA_TRAINABLES} is missing: this LoRA folder of a {config.model_type} model would "
        f"load with an untrained {trained} (the training run writes the file next to "
        "adapter_model.safetensors; copy it back)"
    )


def _require_complete(report: LoadReport, model_path: str) -> None:
    """Refuse a model some of whose parameters no file provided."""
    if report.missing:
        raise KeyError(
            f"{model_path}: {len(report.missing)} parameter(s) would stay newly initialised, as no file of "
            f"the checkpoint (nor the base) holds them, e.g. {report.missing[:3]}"
        )


def _quantization_config(load_8bit: bool, load_4bit: bool, device: str):
    if not (load_8bit or load_4bit):
        return None
    if load_8bit and load_4bit:
        raise ValueError("choose one of load_8bit and load_4bit")
    if torch.device(device).type != "cuda":
        raise ValueError("4/8-bit loading needs a CUDA device (bitsandbytes)")
    from transformers import BitsAndBytesConfig

    if load_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=torch.float16,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_quant_type="nf4",
    )


def load_pretrained_model(
    model_path: str,
    model_base: str | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
):
    """Load a checkpoint for inference, as LLaVA's loader does.

    Args:
        model_path: a complete/merged checkpoint, a LoRA run's output, or a LLaVA stage-1
            projector folder (see the module docstring), local or on a hub.
        model_base: the base LLM for LoRA and projector-only checkpoints.
        device: `cpu`, `cuda`, `cuda:1`, ... (default: CUDA when available).
        dtype: default fp32 on CPU, bf16/fp16 on GPU.

    Returns:
        `(tokenizer, model, image_processor, context_len)`; `image_processor` is None for a
        text-only Llama checkpoint.
    """
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    quantization = _quantization_config(load_8bit, load_4bit, device)
    load_kwargs = {
        "dtype": dtype,
        "attn_implementation": attn_implementation,
        "quantization_config": quantization,
    }
    path = _local_folder(model_path, "model path")
    config = AutoConfig.from_pretrained(path)
    is_adapter = (path / "adapter_config.json").exists()
    is_partial = is_adapter or (not _has_weights(path) and (path / MM_PROJECTOR).exists())
    multimodal = isinstance(config, MultimodalLlamaConfig)

    if is_partial:
        if model_base is None:
            raise ValueError(f"{model_path} holds only trained parts (LoRA/projector); pass --model-base")
        if is_adapter:
            _require_non_lora_trainables(path, config)
        base = _local_folder(model_base, "model base")
        model_cls = (
            MODEL_CLASSES[config.model_type][1] if config.model_type in MODEL_CLASSES else LlamaForCausalLM
        )
        model, report = _from_pretrained(model_cls, base, config=config, **load_kwargs)
        if multimodal:
            _ensure_vision_tower(model, base, report)
        for name in (NON_LORA_TRAINABLES, MM_PROJECTOR):
            if (path / name).exists():
                report.record(path / name, _load_safetensors_into(model, path / name))
        _require_complete(report, model_path)
        if is_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, path).merge_and_unload()
            logger.info("merged the LoRA adapter of %s", model_path)
    else:
        if model_base is not None:
            raise ValueError(
                f"{model_path} is a complete checkpoint; --model-base applies only to LoRA/projector runs"
            )
        base = None
        model, report = _from_pretrained(AutoModelForCausalLM, path, **load_kwargs)
        if multimodal:
            _ensure_vision_tower(model, path, report)
        _require_complete(report, model_path)
    if report.unexpected:
        logger.warning(
            "%s: %d key(s) of the base checkpoint match no parameter and were ignored, e.g. %s",
            model_path,
            len(report.unexpected),
            report.unexpected[:3],
        )
    logger.info("loaded %s; %s", model_path, report.describe())
    if quantization is None:
        model.to(device=device)
    model.eval()

    tokenizer = _load_tokenizer(path, base)
    image_processor = None
    if multimodal:
        source = path if (path / "preprocessor_config.json").exists() else config.mm_vision_tower
        image_processor = load_image_processor(source)
    context_len = getattr(config, "max_sequence_length", None) or config.max_position_embeddings
    return tokenizer, model, image_processor, context_len
