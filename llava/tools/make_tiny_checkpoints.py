"""Write tiny Hugging Face checkpoints for tests and benchmarks, offline, in seconds.

    python -m llava.tools.make_tiny_checkpoints --output-dir DIR

    python -m llava.tools.make_tiny_checkpoints --output-dir DIR --llm qwen2 --tower siglip

    python -m llava.tools.make_tiny_checkpoints --output-dir DIR --legacy-prefix

`DIR/llm`: a tiny LLM (random weights; `--llm` llama (default), llama3, mistral, qwen2, qwen3 or
gemma) with a fast tokenizer in its family's style trained on the spot on the chat templates' text;
`DIR/vision`: a tiny vision tower (random weights; `--tower` clip (default), siglip or siglip2) with its image
processor. `--legacy-prefix`: the tokenizer prefixes every piece of text between special tokens with
`▁`, as Llama/Vicuna's does, so a LLaVA-1.5 baseline trained on it exports with
`llava.tools.export_llava_hf` (which refuses the default tiny tokenizer: it breaks text after
`<image>` differently from the llava-hf processor).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    GemmaConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
    Siglip2ImageProcessorPil,
    Siglip2VisionConfig,
    Siglip2VisionModel,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from llava.conversation import conv_templates
from llava.tools.tokenizer import train_tokenizer

logger = logging.getLogger(__name__)

# Tiny LLM -> its tokenizer's style (`llava.tools.tokenizer.STYLES`). `llama3` is the Llama family
# (model_type `llama`) with Llama-3's tokenizer, rope scaling and tied embeddings.
LLMS = {
    "llama": "llama",
    "llama3": "llama3",
    "mistral": "llama",
    "qwen2": "qwen",
    "qwen3": "qwen",
    "gemma": "llama",
}
TOWERS = ("clip", "siglip", "siglip2")

_WORDS = (
    "What is in the image? Describe the picture in detail. Is there a red circle? yes no Yes No "
    "How many squares are there? one two three four five six seven eight nine ten "
    "red green blue yellow circle square triangle left right top bottom above below "
    "Answer the question using a single word or phrase. "
    "Answer with the option's letter from the given choices directly. A. B. C. D. "
    "The answer is 0 1 2 3 4 5 6 7 8 9 + - = . , ? ! : ; ' \" ( ) [ ] <image> \n"
)


# The templates of each tokenizer style's corpus: LLaVA-1.5's for the `llama` style (so its tiny
# Llama stays as it was), plus the family's own template for the others.
_LLAVA_TEMPLATES = ("vicuna_v1", "v1", "llava_v1", "plain", "llava_llama_2", "mistral_instruct")
_CORPUS_TEMPLATES = {
    "llama": _LLAVA_TEMPLATES,
    "llama3": (*_LLAVA_TEMPLATES, "llama_3"),
    "qwen": (*_LLAVA_TEMPLATES, "qwen_2"),
}


def tokenizer_corpus(style: str = "llama") -> list[str]:
    """Text covering the system prompt, roles and separators of `style`'s templates, plus
    common words."""
    corpus = [_WORDS]
    for name in _CORPUS_TEMPLATES[style]:
        conv = conv_templates[name].copy()
        conv.append_message(conv.roles[0], "What is in the image?")
        conv.append_message(conv.roles[1], "A red circle and two blue squares.")
        corpus.append(conv.get_prompt())
    return corpus * 4


def _family_config(llm: str, tokenizer, hidden_size: int, num_layers: int):
    """The tiny config of `llm`, with what makes the family differ from Llama (see
    `llava.model.families`): Llama-3's rope scaling and tied embeddings (as Llama-3.2 1B/3B),
    Mistral's sliding window, Qwen2's q/k/v biases and tied embeddings (as Qwen2.5 0.5B-3B),
    Qwen3's q/k norms and a head_dim other than hidden / heads, Gemma's scaled embeddings."""
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if llm == "llama":
        return LlamaConfig(**common, tie_word_embeddings=False)
    if llm == "llama3":
        rope = {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 256,
        }
        return LlamaConfig(**common, rope_parameters=rope, tie_word_embeddings=True)
    if llm == "mistral":
        return MistralConfig(**common, sliding_window=24, tie_word_embeddings=False)
    if llm == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True)
    if llm == "qwen3":
        return Qwen3Config(**common, head_dim=2 * hidden_size // 4, tie_word_embeddings=True)
    return GemmaConfig(**common, head_dim=hidden_size // 4)


def make_llm(
    output_dir: Path,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 4,
    legacy_prefix: bool = False,
    llm: str = "llama",
) -> Path:
    """A tiny LLM of family `llm` (random weights) in `output_dir/llm`, with a tokenizer in its
    family's style (`LLMS`); `legacy_prefix`: a `llama`-style tokenizer that prefixes every piece
    of text between special tokens with `▁`, as Llama/Vicuna's does (see `train_tokenizer`)."""
    if llm not in LLMS:
        raise ValueError(f"unknown tiny LLM {llm!r}; expected one of {sorted(LLMS)}")
    tokenizer = train_tokenizer(
        tokenizer_corpus(LLMS[llm]),
        vocab_size=384,
        model_max_length=1024,
        legacy_prefix=legacy_prefix,
        style=LLMS[llm],
    )
    config = _family_config(llm, tokenizer, hidden_size, num_layers)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    path = output_dir / "llm"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_vision_tower(
    output_dir: Path, seed: int = 0, image_size: int = 32, patch_size: int = 8, tower: str = "clip"
) -> Path:
    """A tiny `clip`, `siglip` or `siglip2` (NaFlex, `num_patches` a square grid of the same
    size) vision tower (random weights) with its own image processor (SigLIP's: a plain resize
    to the square input, mean and std 0.5; NaFlex's: patches) in `output_dir/vision`."""
    if tower not in TOWERS:
        raise ValueError(f"unknown tiny tower {tower!r}; expected one of {sorted(TOWERS)}")
    sizes = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": patch_size,
    }
    torch.manual_seed(seed + 1)
    if tower == "clip":
        model = CLIPVisionModel(CLIPVisionConfig(**sizes, projection_dim=32))
        processor = CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
    elif tower == "siglip":
        model = SiglipVisionModel(SiglipVisionConfig(**sizes))
        processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    else:
        patches = (image_size // patch_size) ** 2
        del sizes["image_size"]
        model = Siglip2VisionModel(Siglip2VisionConfig(**sizes, num_patches=patches))
        processor = Siglip2ImageProcessorPil(patch_size=patch_size, max_num_patches=patches)
    path = output_dir / "vision"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def make_tiny_checkpoints(
    output_dir: str | Path,
    seed: int = 0,
    llm: str = "llama",
    tower: str = "clip",
    legacy_prefix: bool = False,
) -> tuple[Path, Path]:
    """`(output_dir/llm, output_dir/vision)`: a tiny LLM of family `llm` and a tiny `tower`;
    `legacy_prefix`: see `make_llm`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    llm = make_llm(output_dir, seed, legacy_prefix=legacy_prefix, llm=llm)
    vision = make_vision_tower(output_dir, seed, tower=tower)
    logger.info("wrote tiny checkpoints: %s, %s", llm, vision)
    return llm, vision


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llm", choices=sorted(LLMS), default="llama", help="the LLM family")
    parser.add_argument("--tower", choices=sorted(TOWERS), default="clip", help="the vision tower")
    parser.add_argument(
        "--legacy-prefix",
        action="store_true",
        help="a tokenizer that prefixes text after special tokens as Llama/Vicuna's does (the one "
        "llava.tools.export_llava_hf accepts); Metaspace styles only (not qwen2, qwen3)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    make_tiny_checkpoints(
        args.output_dir, args.seed, llm=args.llm, tower=args.tower, legacy_prefix=args.legacy_prefix
    )


if __name__ == "__main__":
    main()
