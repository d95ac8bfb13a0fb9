"""Inference: one engine behind the eval runners, the CLIs, the OpenAI-compatible server, the web
demo and the lmms-eval model.

- `decoding`: decoding settings (greedy, sampling, beams, stop strings) and finished completions.
- `prompting`: conversations (LLaVA's templates) from a query or from OpenAI-style messages.
- `images`: image inputs (data URLs, local files under an allowed folder, opt-in remote URLs).
- `streaming`: text deltas per batch row while `generate` runs.
- `engine`: a checkpoint loaded once; batched, left-padded generation with the KV cache.
- `scheduler`: request-level batching: concurrent requests share one `generate` call.
- `continuous`: continuous batching: requests join and leave a running batch at every decode
  step (`decode_batch`: the rows' shared KV cache; `rows`: each row's tokens and text).
"""

from llava.inference.decoding import Completion, DecodingSettings
from llava.inference.engine import ContextOverflowError, LoadedModel
from llava.inference.prompting import (
    DEFAULT_CONV_MODE,
    PromptError,
    conversation_from_messages,
    open_conversation,
    split_image_files,
    with_image_tokens,
)

__all__ = [
    "DEFAULT_CONV_MODE",
    "Completion",
    "ContextOverflowError",
    "DecodingSettings",
    "LoadedModel",
    "PromptError",
    "conversation_from_messages",
    "open_conversation",
    "split_image_files",
    "with_image_tokens",
]
