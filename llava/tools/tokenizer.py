"""Train a small Llama-style fast tokenizer offline (for tiny checkpoints and the playground).

BPE over a Metaspace pre-tokenizer (spaces become `▁`, as in Llama's sentencepiece model),
single digits, every printable ASCII character in the base alphabet (so no text is ever
`<unk>`), and `<s>` prepended by the post-processor.

Text starts with `▁` only at the start of the input (`prepend_scheme="first"`). With
`legacy_prefix=True` it behaves as Llama/Vicuna's legacy tokenizer instead: every piece of text
between special tokens starts with `▁`, so text after `<image>` tokenises as it does alone.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")


def train_tokenizer(
    corpus: Iterable[str], vocab_size: int = 512, model_max_length: int = 2048, legacy_prefix: bool = False
) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on `corpus`; ids 0-3 are `<unk> <s> </s> <pad>`."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
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
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=sorted(set(string.printable) | {"▁"}),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
