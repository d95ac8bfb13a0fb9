"""Write tiny Hugging Face checkpoints for tests and benchmarks, offline, in seconds.

    python -m llava.tools.make_tiny_checkpoints --output-dir DIR

`DIR/llm`: a tiny Llama (random weights) with a fast tokenizer trained on the spot on the chat
templates' text; `DIR/vision`: a tiny CLIP vision tower (random weights) with its image processor.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from llava.conversation import conv_templates
from llava.tools.tokenizer import train_tokenizer

logger = logging.getLogger(__name__)

_WORDS = (
    "What is in the image? Describe the picture in detail. Is there a red circle? yes no Yes No "
    "How many squares are there? one two three four five six seven eight nine ten "
    "red green blue yellow circle square triangle left right top bottom above below "
    "Answer the question using a single word or phrase. "
    "Answer with the option's letter from the given choices directly. A. B. C. D. "
    "The answer is 0 1 2 3 4 5 6 7 8 9 + - = . , ? ! : ; ' \" ( ) [ ] <image> \n"
)


def tokenizer_corpus() -> list[str]:
    """Text covering every template's system prompt, roles and separators, plus common words."""
    corpus = [_WORDS]
    for conv in conv_templates.values():
        conv = conv.copy()
        conv.append_message(conv.roles[0], "What is in the image?")
        conv.append_message(conv.roles[1], "A red circle and two blue squares.")
        corpus.append(conv.get_prompt())
    return corpus * 4


def make_llm(
    output_dir: Path, seed: int = 0, hidden_size: int = 64, num_layers: int = 4, legacy_prefix: bool = False
) -> Path:
    """A tiny Llama in `output_dir/llm`; `legacy_prefix`: a tokenizer that prefixes every piece of
    text between special tokens with `▁`, as Llama/Vicuna's does (see `train_tokenizer`)."""
    tokenizer = train_tokenizer(
        tokenizer_corpus(), vocab_size=384, model_max_length=1024, legacy_prefix=legacy_prefix
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    path = output_dir / "llm"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_vision_tower(output_dir: Path, seed: int = 0, image_size: int = 32, patch_size: int = 8) -> Path:
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )
    torch.manual_seed(seed + 1)
    model = CLIPVisionModel(config)
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    path = output_dir / "vision"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def make_tiny_checkpoints(output_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    llm, vision = make_llm(output_dir, seed), make_vision_tower(output_dir, seed)
    logger.info("wrote tiny checkpoints: %s, %s", llm, vision)
    return llm, vision


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    make_tiny_checkpoints(args.output_dir, args.seed)


if __name__ == "__main__":
    main()
