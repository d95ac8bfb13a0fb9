"""Export a LLaVA-1.5 baseline checkpoint of this project as a llava-hf folder.

    python -m llava.tools.export_llava_hf --model-path CKPT [--model-base BASE] --output-dir OUT

`OUT` holds what `transformers.LlavaForConditionalGeneration.from_pretrained(OUT)` and
`AutoProcessor.from_pretrained(OUT)` load, and so what vLLM and SGLang serve: `config.json`
(`model_type: "llava"`), safetensors weights, the tokenizer with an `<image>` token appended to
the vocabulary, the image processor (LLaVA-1.5's `pad` handling as `do_pad`), a chat template
that renders the conversation template's prompt text, a generation config, and a model card.

The `<image>` row of `lm_head` is zero and the generation config suppresses the token, so
transformers' greedy answers equal this project's. Before writing, the export checks that the
processor's tokenisation of a one-turn prompt equals this project's; a tokenizer that breaks
text after `<image>` differently is an error (see docs/checkpoints.md), unless
`--allow-prompt-mismatch` is given.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import LlavaForConditionalGeneration, LlavaProcessor
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from llava.cli_errors import UserError, run_command
from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import get_conv_template
from llava.mm_utils import tokenize_conversation
from llava.model.builder import load_pretrained_model
from llava.model.llava_hf import chat_template, to_hf_config, to_hf_state_dict
from llava.model.llava_llama import LlavaLlamaForCausalLM

logger = logging.getLogger(__name__)

_PROBE_QUESTION = "What is in the image?"
_VOCAB_TENSORS = ("model.language_model.embed_tokens.weight", "lm_head.weight")


class ExportRefusedError(UserError, ValueError):
    """A checkpoint without a faithful llava-hf equivalent: not the LLaVA-1.5 baseline, or a
    tokenizer that the llava-hf processor would use differently."""


def with_image_token(tokenizer) -> int:
    """Append `<image>` to `tokenizer`'s vocabulary unless it has it; returns its id."""
    if DEFAULT_IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens(
            [AddedToken(DEFAULT_IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True
        )
    return tokenizer.convert_tokens_to_ids(DEFAULT_IMAGE_TOKEN)


def _grow_vocab(state: dict[str, torch.Tensor], vocab_size: int) -> None:
    """Zero rows for the tokens added after training (the `<image>` token)."""
    for name in _VOCAB_TENSORS:
        weight = state[name]  # [V, d_h]
        if weight.shape[0] < vocab_size:
            state[name] = torch.cat([weight, weight.new_zeros(vocab_size - weight.shape[0], weight.shape[1])])


def image_processor_for(image_processor, image_aspect_ratio: str) -> LlavaImageProcessorPil:
    """The tower's CLIP processor with LLaVA-1.5's aspect handling (`pad` -> `do_pad`)."""
    settings = {
        k: v
        for k, v in image_processor.to_dict().items()
        if k not in ("image_processor_type", "processor_class")
    }
    return LlavaImageProcessorPil(**settings, do_pad=image_aspect_ratio == "pad")


def prompt_mismatch(processor: LlavaProcessor, tokenizer, conv_mode: str) -> str | None:
    """Where the processor's tokens for a one-turn image prompt differ from this project's
    (None when they are equal)."""
    conv = get_conv_template(conv_mode)
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{_PROBE_QUESTION}")
    conv.append_message(conv.roles[1], None)
    ours, _ = tokenize_conversation(conv, tokenizer)
    image_id = processor.image_token_id
    ours = [image_id if t == IMAGE_TOKEN_INDEX else t for t in ours]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": _PROBE_QUESTION}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    if text != conv.get_prompt():
        return f"the chat template renders {text!r}, the {conv_mode} template {conv.get_prompt()!r}"
    theirs = processor.tokenizer(text).input_ids
    if theirs == ours:
        return None
    at = next(
        (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs))
    )
    return (
        f"token {at}: this project has {tokenizer.convert_ids_to_tokens(ours[at : at + 3])}, the processor "
        f"{tokenizer.convert_ids_to_tokens(theirs[at : at + 3])}"
    )


def _model_card(model_path: str, model_base: str | None, conv_mode: str) -> str:
    base = f" with base `{model_base}`" if model_base else ""
    return (
        "---\nlibrary_name: transformers\npipeline_tag: image-text-to-text\ntags: [llava, llava-1.5]\n---\n\n"
        "# LLaVA-1.5 baseline (llava-hf format)\n\n"
        f"Exported by `python -m llava.tools.export_llava_hf` from `{model_path}`{base}. "
        f"Prompts follow the `{conv_mode}` template (the chat template renders it).\n\n"
        "```python\nfrom transformers import AutoProcessor, LlavaForConditionalGeneration\n"
        "model = LlavaForConditionalGeneration.from_pretrained(PATH)\n"
        "processor = AutoProcessor.from_pretrained(PATH)\n```\n"
    )


def export_llava_hf(
    model_path: str,
    output_dir: str | Path,
    model_base: str | None = None,
    conv_mode: str = "vicuna_v1",
    allow_prompt_mismatch: bool = False,
) -> Path:
    """Write the llava-hf folder of a baseline checkpoint (see the module docstring)."""
    tokenizer, model, image_processor, _ = load_pretrained_model(
        model_path, model_base, device="cpu", dtype=torch.float32
    )
    if not isinstance(model, LlavaLlamaForCausalLM):
        raise ExportRefusedError(
            f"{model_path} is a {model.config.model_type} checkpoint; only the LLaVA-1.5 baseline "
            "(llava_llama) has a llava-hf equivalent"
        )
    image_id = with_image_token(tokenizer)
    vocab_size = max(len(tokenizer), model.config.vocab_size)
    config = to_hf_config(model.config, image_id, vocab_size)
    state = to_hf_state_dict(model.state_dict())
    _grow_vocab(state, vocab_size)
    hf_model = LlavaForConditionalGeneration(config)
    hf_model.load_state_dict(state, strict=True)
    hf_model.generation_config.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=[image_id],
    )
    processor = LlavaProcessor(
        image_processor=image_processor_for(image_processor, model.config.image_aspect_ratio),
        tokenizer=tokenizer,
        patch_size=model.config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        chat_template=chat_template(get_conv_template(conv_mode)),
        num_additional_image_tokens=1,  # CLIP's CLS position
    )
    mismatch = prompt_mismatch(processor, tokenizer, conv_mode)
    if mismatch is not None:
        message = f"{model_path}: the llava-hf processor would tokenise prompts differently ({mismatch})"
        if not allow_prompt_mismatch:
            raise ExportRefusedError(message + "; pass --allow-prompt-mismatch to export anyway")
        logger.warning("%s", message)
    output_dir = Path(output_dir)
    hf_model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    (output_dir / "README.md").write_text(_model_card(model_path, model_base, conv_mode), encoding="utf-8")
    logger.info("wrote the llava-hf export of %s to %s", model_path, output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True, help="a baseline (llava_llama) checkpoint")
    parser.add_argument("--model-base", default=None, help="the base LLM of a LoRA or projector-only run")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--conv-mode", default="vicuna_v1", help="the template the chat template renders")
    parser.add_argument(
        "--allow-prompt-mismatch",
        action="store_true",
        help="export although the processor tokenises prompts differently from this project",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return export_llava_hf(
        args.model_path, args.output_dir, args.model_base, args.conv_mode, args.allow_prompt_mismatch
    )


if __name__ == "__main__":
    run_command(main)
