"""Token ids and labels of one conversation: tokenisation, the masking check, the length check.

Ids and labels come from `llava.mm_utils.tokenize_conversation`, which tokenises the template's
segments one by one (the same function builds inference prompts), so the supervised spans are the
assistant replies with their end tokens by construction. `check_masking` still verifies that the
result lines up with the conversation, and raises instead of training on a wrongly masked sample.
"""

from __future__ import annotations

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import Conversation, SeparatorStyle
from llava.data.records import BadSampleError
from llava.mm_utils import tokenize_conversation
from llava.model.tokenizers import ensure_pad_token

# Training's `--model_max_length` default (LLaVA-1.5's), also the validator's.
DEFAULT_MODEL_MAX_LENGTH = 2048


def load_tokenizer(path: str, model_max_length: int):
    """The LLM's tokenizer as training uses it (and the validator checks with): right padding,
    `model_max_length` set, the pad token chosen by `llava.model.tokenizers.ensure_pad_token`."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=model_max_length, padding_side="right")
    return ensure_pad_token(tokenizer, path)


def supervised_spans(labels: list[int]) -> list[tuple[int, int]]:
    """`[start, stop)` of every run of supervised (non-ignored) labels."""
    spans: list[tuple[int, int]] = []
    start = None
    for i, label in enumerate(labels):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(labels)))
    return spans


def end_text(conv: Conversation) -> str:
    """What every assistant reply of the template ends with (its end token or separator)."""
    return conv.sep if conv.sep_style is SeparatorStyle.PLAIN else conv.sep2


def check_masking(conv: Conversation, input_ids: list[int], labels: list[int], tokenizer) -> None:
    """Raise `BadSampleError` unless the supervised tokens are exactly the assistant replies.

    Checks: one supervised span per assistant reply, labels equal to the ids inside the spans,
    no image placeholder supervised, and every span ending with the template's end text (so the
    model learns to stop).
    """
    if len(input_ids) != len(labels):
        raise BadSampleError(f"{len(input_ids)} token ids but {len(labels)} labels", kind="masking")
    replies = sum(1 for i, (_, message) in enumerate(conv.messages) if i % 2 == 1 and message is not None)
    spans = supervised_spans(labels)
    if len(spans) != replies:
        raise BadSampleError(
            f"masking does not line up: {replies} assistant repl(y/ies) but {len(spans)} supervised span(s)",
            kind="masking",
        )
    stop = end_text(conv)
    for start, end in spans:
        if labels[start:end] != input_ids[start:end]:
            raise BadSampleError(
                f"masking does not line up: labels differ from the ids in positions {start}..{end}",
                kind="masking",
            )
        if IMAGE_TOKEN_INDEX in input_ids[start:end]:
            raise BadSampleError("an <image> placeholder sits inside an assistant reply", kind="masking")
        text = tokenizer.decode(input_ids[start:end], skip_special_tokens=False)
        if stop and not text.endswith(stop):
            raise BadSampleError(
                f"masking does not line up: the supervised span {text[-40:]!r} does not end with the "
                f"template's end {stop!r} (does the tokenizer know it?)",
                kind="masking",
            )


def effective_length(input_ids: list[int], num_image_tokens: int) -> int:
    """Sequence length once every image placeholder is expanded into its positions."""
    n_images = sum(1 for token in input_ids if token == IMAGE_TOKEN_INDEX)
    return len(input_ids) + n_images * (num_image_tokens - 1)


def tokenize_sample(
    conv: Conversation, tokenizer, max_length: int | None, num_image_tokens: int
) -> tuple[list[int], list[int]]:
    """Ids and labels of `conv`, masking checked (see `check_masking`).

    A sample longer than `max_length` positions (each image counted as `num_image_tokens`) is
    never cut: every template ends with a supervised reply, so a cut would train a truncated
    reply without its end token. It raises `BadSampleError` of kind `too_long` instead.
    `max_length=None` checks no length.
    """
    input_ids, labels = tokenize_conversation(conv, tokenizer)
    check_masking(conv, input_ids, labels, tokenizer)
    length = effective_length(input_ids, num_image_tokens)
    if max_length is not None and length > max_length:
        raise BadSampleError(
            f"{length} positions ({len(input_ids)} tokens, images expanded to {num_image_tokens} each) "
            f"> model_max_length {max_length}: its reply would be cut",
            kind="too_long",
        )
    return input_ids, labels
