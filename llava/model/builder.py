"""Loading models: from pre-trained backbones (training) and from checkpoints (inference).

What a checkpoint is, is decided from its own files, never from its folder's name (nor from
`model_name` or config.json's `architectures`):

| files in `model_path`                                                | meaning                           |
|----------------------------------------------------------------------|-----------------------------------|
| config with `text_config`, `"model_type": "llava"`                   | transformers' llava (llava-hf)    |
| flat config, `"model_type": "llava"`/`"llava_llama"`, no `vision_config` | LLaVA-1.5's own files (below) |
| model weights: `model*.safetensors` or `pytorch_model*.bin` (+ index) | complete (or merged) model        |
| `adapter_config.json` + `non_lora_trainables.{safetensors,bin}`      | LoRA run: needs `model_base`      |
| `mm_projector.{safetensors,bin}`, no model weights                   | stage-1 projector: needs `model_base` |
| flat `fusion_llama` config with the release's fields, `non_lora_trainables.bin` | the paper's release's LoRA run: needs `model_base` |

New models from backbones are built by `llava.model.from_backbones` (re-exported here); the
parts loaded on top of a base by `llava.model.checkpoint_parts`; LLaVA-1.5's configs are translated
by `llava.model.llava_formats`, the release's folders read by `llava.model.release_checkpoint`;
pickled files are read
weights-only by `llava.model.weights`; LLaVA's placement keywords are interpreted by
`llava.model.placement`. See docs/checkpoints.md for every format.

What a load guarantees (see docs/model.md, "Loading: what is checked"): every parameter holds a
value read from a file, except those `build_from_backbones` reports as newly initialised; a LoRA
folder of a multimodal model must hold its non-LoRA trainables; every tensor copied by hand is
shape-checked; locations are resolved by `llava.model.paths.resolve_location`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from llava.cli_errors import UserError
from llava.model.checkpoint_parts import (
    MM_PROJECTOR,
    NON_LORA_TRAINABLES,
    ensure_vision_tower,
    llava_vision_tower,
    load_partial_state,
    load_tower_from,
    merge_lora,
    one_of,
    require_complete,
    require_non_lora_trainables,
)
from llava.model.configuration import is_multimodal_config
from llava.model.from_backbones import build_from_backbones, multimodal_config_from_backbones
from llava.model.fusion_llama import FusionLlamaForCausalLM
from llava.model.llava_formats import (
    LLAVA_MM_PROJECTOR,
    LLAVA_NON_LORA_TRAINABLES,
    LlavaCheckpointConfig,
    is_llava_config,
    translate_llava_config,
)
from llava.model.llava_hf import is_llava_hf_config, load_llava_hf
from llava.model.llava_llama import LlavaLlamaForCausalLM
from llava.model.load_report import LoadReport, from_pretrained_checked
from llava.model.paths import resolve_location
from llava.model.placement import (
    attention_implementation,
    default_dtype,
    quantization_config,
    resolve_device,
)
from llava.model.registry import MODEL_CLASSES
from llava.model.release_checkpoint import (
    RELEASE_FUSION_FILE,
    ReleaseFusionTensors,
    check_base_copies,
    is_release_config,
    read_release_fusion,
    translate_release_config,
)
from llava.model.tokenizers import ensure_pad_token
from llava.model.vision_tower import load_image_processor
from llava.model.weights import check_folder_pickles, copy_checked, load_pickled_weights, model_weight_files

__all__ = [
    "MM_PROJECTOR",
    "NON_LORA_TRAINABLES",
    "LoadReport",
    "ModelBaseError",
    "build_from_backbones",
    "load_pretrained_model",
    "multimodal_config_from_backbones",
]

logger = logging.getLogger(__name__)


class ModelBaseError(UserError, ValueError):
    """`--model-base` is missing for a folder of trained parts (LoRA, projector), or given for a
    complete checkpoint."""


def _local_folder(location: str, what: str) -> Path:
    """A local folder, or the hub snapshot of an `org/name` id (see `resolve_location`)."""
    resolved = resolve_location(location, what)
    if Path(resolved).is_dir():
        return Path(resolved)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(resolved))


def _read_raw_config(folder: Path) -> dict:
    file = folder / "config.json"
    if not file.exists():
        raise FileNotFoundError(f"{file} is missing: every checkpoint folder holds its config")
    return json.loads(file.read_text())


def _load_tokenizer(model_path: Path, model_base: Path | None):
    source = model_path if (model_path / "tokenizer_config.json").exists() else model_base
    if source is None:
        raise FileNotFoundError(f"no tokenizer in {model_path} and no --model-base to take one from")
    return ensure_pad_token(AutoTokenizer.from_pretrained(source), str(source))


@dataclass
class _Plan:
    """What `load_pretrained_model` found in a checkpoint folder: its kind and what to load how."""

    kind: str  # "complete", "lora" or "projector"
    config: object
    model_cls: type
    llava: LlavaCheckpointConfig | None = None  # set for LLaVA-1.5's own files
    trainables: Path | None = None
    release: ReleaseFusionTensors | None = None  # set for the release's LoRA folders


def _release_plan(path: Path, raw: dict) -> _Plan:
    """The release's LoRA output folder: the variant, layers and targets from its tensors."""
    if not (path / "adapter_config.json").exists():
        raise FileNotFoundError(
            f"{path}: a config of the paper's release without adapter_config.json; only its LoRA output "
            "folders (adapter + non_lora_trainables.bin) can be loaded"
        )
    tensors = read_release_fusion(path, load_pickled_weights)
    config = translate_release_config(raw, tensors, path / "config.json")
    logger.info(
        "%s: the release's %s layer in layers %s (decided from %s's tensor names)",
        path,
        tensors.variant,
        tensors.layer_ids,
        RELEASE_FUSION_FILE,
    )
    return _Plan("lora", config, FusionLlamaForCausalLM, release=tensors)


def _load_release_fusion(model, path: Path, release: ReleaseFusionTensors, report: LoadReport) -> None:
    check_base_copies(model, release.base_copies, path)
    params = dict(model.named_parameters())
    source = path / RELEASE_FUSION_FILE
    for key, value in release.fusion.items():
        copy_checked(params[key], value, key, source)
    report.record(source, list(release.fusion))


def _plan(path: Path, raw: dict) -> _Plan:
    """Decide from the folder's files (and only them) what it is and how it loads."""
    if is_release_config(raw):
        return _release_plan(path, raw)
    if is_llava_config(raw):
        llava = translate_llava_config(raw, path / "config.json")
        config, model_cls = llava.config, LlavaLlamaForCausalLM
    else:
        llava, config = None, AutoConfig.from_pretrained(path)
        model_cls = MODEL_CLASSES[config.model_type][1] if config.model_type in MODEL_CLASSES else None
    if (path / "adapter_config.json").exists():
        expected = LLAVA_NON_LORA_TRAINABLES if llava else NON_LORA_TRAINABLES
        trainables = require_non_lora_trainables(path, config, expected)
        return _Plan("lora", config, model_cls or AutoModelForCausalLM, llava, trainables)
    if model_weight_files(path):
        return _Plan("complete", config, model_cls or AutoModelForCausalLM, llava)
    projector = one_of(path, (MM_PROJECTOR, LLAVA_MM_PROJECTOR))
    if projector is not None and is_multimodal_config(config):
        return _Plan("projector", config, model_cls, llava, projector)
    raise FileNotFoundError(
        f"{path}: no weights found (expected model*.safetensors or pytorch_model*.bin, an adapter_config.json "
        "with its adapter, or a multimodal config with mm_projector.safetensors / mm_projector.bin)"
    )


def _load_complete(path: Path, plan: _Plan, load_kwargs: dict):
    check_folder_pickles(path)
    config_kwargs = {} if plan.model_cls is AutoModelForCausalLM else {"config": plan.config}
    model, report = from_pretrained_checked(plan.model_cls, path, **config_kwargs, **load_kwargs)
    if plan.llava is not None:
        llava_vision_tower(model, path, plan.llava, report)
    elif is_multimodal_config(plan.config):
        ensure_vision_tower(model, path, report)
    return model, report


def _load_on_base(path: Path, base: Path, plan: _Plan, load_kwargs: dict):
    """A LoRA or projector folder on top of its base LLM (or base multimodal model)."""
    check_folder_pickles(base)
    model, report = from_pretrained_checked(plan.model_cls, base, config=plan.config, **load_kwargs)
    if plan.llava is not None:
        load_tower_from(model, plan.llava.tower_location, report)
    elif plan.release is not None:
        load_tower_from(model, resolve_location(plan.config.mm_vision_tower, "vision tower"), report)
        _load_release_fusion(model, path, plan.release, report)
    elif is_multimodal_config(plan.config):
        ensure_vision_tower(model, base, report)
    if plan.trainables is not None:
        report.record(plan.trainables, load_partial_state(model, plan.trainables))
    require_complete(report, str(path))
    if plan.kind == "lora":
        foreign = plan.llava is not None or plan.release is not None  # LoRA added before the tower existed
        excluded = r".*\.(vision_tower|mm_projector)\..*" if foreign else None
        model = merge_lora(model, path, excluded)
    return model, report


def _image_processor(path: Path, plan: _Plan):
    """LLaVA takes the tower's processor; this project's folders may carry their own."""
    if plan.llava is not None:
        return load_image_processor(plan.llava.tower_location)
    if not is_multimodal_config(plan.config):
        return None
    source = path if (path / "preprocessor_config.json").exists() else plan.config.mm_vision_tower
    return load_image_processor(source)


def _load_llava_hf_folder(path: Path, model_base, quantization, dtype, attn_implementation):
    if model_base is not None:
        raise ModelBaseError(f"{path} is a complete llava-hf checkpoint; --model-base does not apply")
    if quantization is not None:
        raise ValueError(f"{path}: 4/8-bit loading of llava-hf checkpoints is not supported")
    check_folder_pickles(path)
    model = load_llava_hf(path, dtype=dtype, attn_implementation=attn_implementation)
    return model, load_image_processor(str(path))


def load_pretrained_model(
    model_path: str,
    model_base: str | None = None,
    model_name: str | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map="auto",
    device: str | None = "cuda",
    use_flash_attn: bool = False,
    *,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
):
    """Load a checkpoint for inference, with LLaVA's signature (and this project's keywords).

    Args:
        model_path: a complete/merged checkpoint, a LoRA run's output, or a stage-1 projector
            folder, in this project's, LLaVA-1.5's or transformers' llava format (see the module
            docstring), local or on a hub.
        model_base: the base LLM for LoRA and projector-only checkpoints.
        model_name: LLaVA's name argument; logged, never used: the files decide.
        device_map, device: see `llava.model.placement.resolve_device`; `device=None` means CUDA
            when available, else the CPU. `device="cuda"` (LLaVA's default) without CUDA is an error.
        use_flash_attn: LLaVA's switch for `attn_implementation="flash_attention_2"`.
        dtype: default fp32 on CPU, bf16/fp16 on GPU.

    Returns:
        `(tokenizer, model, image_processor, context_len)`; `image_processor` is None for a
        text-only Llama checkpoint.
    """
    if model_name is not None and not isinstance(model_name, str):
        raise TypeError(
            f"the third argument is LLaVA's model_name (a string), got {model_name!r}; pass load_8bit= "
            "and the other options by keyword"
        )
    if model_name is not None:
        logger.info("model_name %r: not used; the checkpoint's files decide how it loads", model_name)
    target = resolve_device(device, device_map)
    dtype = dtype or default_dtype(target)
    attn_implementation = attention_implementation(use_flash_attn, attn_implementation)
    quantization = quantization_config(load_8bit, load_4bit, target)
    path = _local_folder(model_path, "model path")
    raw = _read_raw_config(path)

    if is_llava_hf_config(raw):
        model, image_processor = _load_llava_hf_folder(
            path, model_base, quantization, dtype, attn_implementation
        )
        logger.info("loaded %s (transformers' llava format)", model_path)
        return _ready(model, _load_tokenizer(path, None), image_processor, target)

    load_kwargs = {
        "dtype": dtype,
        "attn_implementation": attn_implementation,
        "quantization_config": quantization,
    }
    plan = _plan(path, raw)
    base = None
    if plan.kind == "complete":
        if model_base is not None:
            raise ModelBaseError(
                f"{model_path} is a complete checkpoint; --model-base applies only to LoRA/projector runs"
            )
        model, report = _load_complete(path, plan, load_kwargs)
        require_complete(report, model_path)
    else:
        marker = path / "adapter_config.json" if plan.kind == "lora" else plan.trainables
        if model_base is None:
            raise ModelBaseError(
                f"{marker}: {model_path} holds only trained parts (a LoRA run or a stage-1 projector); "
                "pass the LLM they were trained on as model_base (--model-base)"
            )
        base = _local_folder(model_base, "model base")
        model, report = _load_on_base(path, base, plan, load_kwargs)
    logger.info("loaded %s; %s", model_path, report.describe())
    on_device = quantization is None  # bitsandbytes places quantized weights itself
    return _ready(
        model, _load_tokenizer(path, base), _image_processor(path, plan), target if on_device else None
    )


def _ready(model, tokenizer, image_processor, device: str | None):
    """LLaVA's four results, the model in eval mode on `device` (None: where it is)."""
    if device is not None:
        model.to(device=device)
    model.eval()
    config = model.config
    context_len = getattr(config, "max_sequence_length", None) or config.max_position_embeddings
    return tokenizer, model, image_processor, context_len
