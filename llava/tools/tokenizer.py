"""Train a small fast tokenizer offline (for tiny checkpoints and the playground), in the style
of a family's real one.

BPE over a Metaspace pre-tokenizer (spaces become `▁`), single digits, every printable ASCII
character in the base alphabet (so no text is ever unknown). Text starts with `▁` only at the
start of the input (`prepend_scheme="first"`). With `legacy_prefix=True` (the `llama` style) it
behaves as Llama/Vicuna's legacy tokenizer instead: every piece of text between special tokens
starts with `▁`, so text after `<image>` tokenises as it does alone.

The styles' special tokens, as in the real tokenizers:

| style | special tokens (ids from 0) | BOS added | eos | unk | pad | chat template |
|---|---|---|---|---|---|---|
| `llama` (Llama-2, Vicuna, Mistral, Gemma) | `<unk> <s> </s> <pad>` | `<s>` | `</s>` | `<unk>` | `<pad>` | none |
| `llama3` | `<|begin_of_text|> <|end_of_text|> <|start_header_id|> <|end_header_id|> <|eot_id|> <|finetune_right_pad_id|>` | `<|begin_of_text|>` | `<|eot_id|>` | none | none | Llama-3's |
| `qwen` (Qwen2, Qwen2.5, Qwen3) | `<|endoftext|> <|im_start|> <|im_end|>` | none | `<|im_end|>` | none | `<|endoftext|>` | ChatML |

The `qwen` style is byte-level BPE (as Qwen's), the others Metaspace BPE.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")

# Llama-3's template (meta-llama/Meta-Llama-3-8B-Instruct's tokenizer_config.json), without the
# date and tool handling of 3.1+.
LLAMA_3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# ChatML as Qwen2's tokenizer_config.json writes it (Qwen/Qwen2-7B-Instruct).
CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TokenizerStyle:
    special_tokens: tuple[str, ...]
    bos: str | None
    eos: str
    unk: str | None
    pad: str | None
    chat_template: str | None = None
    byte_level: bool = False


STYLES = {
    "llama": TokenizerStyle(SPECIAL_TOKENS, bos="<s>", eos="</s>", unk="<unk>", pad="<pad>"),
    "llama3": TokenizerStyle(
        (
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|finetune_right_pad_id|>",
        ),
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        unk=None,
        pad=None,
        chat_template=LLAMA_3_CHAT_TEMPLATE,
    ),
    "qwen": TokenizerStyle(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos=None,
        eos="<|im_end|>",
        unk=None,
        pad="<|endoftext|>",
        chat_template=CHATML_CHAT_TEMPLATE,
        byte_level=True,
    ),
}


def train_tokenizer(
    corpus: Iterable[str],
    vocab_size: int = 512,
    model_max_length: int = 2048,
    legacy_prefix: bool = False,
    style: str = "llama",
) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on `corpus`, with the special tokens of `style` (see the module
    docstring; `llama`: ids 0-3 are `<unk> <s> </s> <pad>`)."""
    spec = STYLES[style]
    if legacy_prefix and spec.byte_level:
        raise ValueError(f"legacy_prefix is a Metaspace option; style {style!r} is byte-level")
    tokenizer = Tokenizer(models.BPE(unk_token=spec.unk))
    if spec.byte_level:
        return _finish(_train_byte_level(tokenizer, corpus, vocab_size, spec), spec, model_max_length)
    if legacy_prefix:
        # Normalizers run on each piece between special tokens: every piece gets its `▁`.
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never" if legacy_prefix else "first"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(spec.special_tokens),
        initial_alphabet=sorted(set(string.printable) | {"▁"}),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return _finish(tokenizer, spec, model_max_length)


def _train_byte_level(
    tokenizer: Tokenizer, corpus: Iterable[str], vocab_size: int, spec: TokenizerStyle
) -> Tokenizer:
    """Byte-level BPE, as Qwen's (transformers' `Qwen2Tokenizer` rebuilds its pipeline this way)."""
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(spec.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def _finish(tokenizer: Tokenizer, spec: TokenizerStyle, model_max_length: int) -> PreTrainedTokenizerFast:
    """The trained `tokenizer` with `spec`'s BOS post-processor, special tokens and chat template."""
    if spec.bos is not None:
        bos_id = tokenizer.token_to_id(spec.bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos} $A", pair=f"{spec.bos} $A {spec.bos} $B", special_tokens=[(spec.bos, bos_id)]
        )
    named = {spec.bos, spec.eos, spec.unk, spec.pad}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=spec.bos,
        eos_token=spec.eos,
        unk_token=spec.unk,
        pad_token=spec.pad,
        extra_special_tokens=[t for t in spec.special_tokens if t not in named],
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    if spec.chat_template is not None:
        fast.chat_template = spec.chat_template
    return fast
