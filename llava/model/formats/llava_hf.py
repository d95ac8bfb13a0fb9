"""transformers' llava format (the llava-hf checkpoints): a config.json with `"model_type":
"llava"` and a `text_config`, read whole by transformers' `LlavaForConditionalGeneration` and
turned into the LLaVA-1.5 baseline by `llava.model.llava_hf.load_llava_hf` (which also holds the
export's conversions). Always complete: no `--model-base`, and no 4/8-bit loading.
"""

from __future__ import annotations

from pathlib import Path

from llava.model.formats.base import (
    CheckpointFormat,
    Loaded,
    LoadOptions,
    ModelBaseError,
    config_dict,
    load_tokenizer,
)
from llava.model.llava_hf import is_llava_hf_config, load_llava_hf
from llava.model.vision_tower import load_image_processor
from llava.model.weights import check_folder_pickles

NAME = "llava-hf"


def detect(folder: Path) -> bool:
    raw = config_dict(folder)
    return raw is not None and is_llava_hf_config(raw)


def load(folder: Path, model_base: str | None, options: LoadOptions) -> Loaded:
    if model_base is not None:
        raise ModelBaseError(f"{folder} is a complete llava-hf checkpoint; --model-base does not apply")
    if options.quantization is not None:
        raise ValueError(f"{folder}: 4/8-bit loading of llava-hf checkpoints is not supported")
    check_folder_pickles(folder)
    model = load_llava_hf(folder, dtype=options.dtype, attn_implementation=options.attn_implementation)
    return Loaded(
        model,
        load_tokenizer(folder, None),
        load_image_processor(str(folder)),
        summary="every tensor from the folder, through transformers' LlavaForConditionalGeneration",
    )


FORMAT = CheckpointFormat(
    name=NAME,
    looks_for='config.json with "model_type" "llava" and a text_config',
    detect=detect,
    load=load,
)
