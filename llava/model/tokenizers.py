"""The pad token of a model's tokenizer, chosen without adding a token (so the embeddings are
never resized and a checkpoint's vocabulary stays the LLM's).

Padding positions are masked everywhere in this project (the attention mask is built from the
lengths, labels are `IGNORE_INDEX` there), so the pad token's id only has to exist. The choice,
in order: the tokenizer's own pad token (Qwen2/2.5/3: `<|endoftext|>`); its unk token, as LLaVA
does for Llama-2/Vicuna and Mistral; a reserved padding token of the vocabulary
(`PAD_CANDIDATES`: Llama-3.1+'s `<|finetune_right_pad_id|>`, Llama-3's
`<|reserved_special_token_0|>`); else its eos token.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|reserved_special_token_0|>", "<|endoftext|>")


def choose_pad_token(tokenizer) -> str:
    """The pad token `tokenizer` should use (see the module docstring); an error when it has
    none of them, naming the tokenizer."""
    if tokenizer.pad_token is not None:
        return tokenizer.pad_token
    if tokenizer.unk_token is not None:
        return tokenizer.unk_token
    vocab = tokenizer.get_vocab()
    for candidate in PAD_CANDIDATES:
        if candidate in vocab:
            return candidate
    if tokenizer.eos_token is not None:
        return tokenizer.eos_token
    raise ValueError(
        f"tokenizer {tokenizer.name_or_path!r} has no pad, unk or eos token and none of {list(PAD_CANDIDATES)}: "
        "set its pad_token in tokenizer_config.json"
    )


def ensure_pad_token(tokenizer, source: str):
    """`tokenizer` with a pad token (its own, or `choose_pad_token`'s); `source` is logged."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = choose_pad_token(tokenizer)
        logger.info(
            "%s: the tokenizer has no pad token; padding with %r (id %d), no token added",
            source,
            tokenizer.pad_token,
            tokenizer.pad_token_id,
        )
    return tokenizer
