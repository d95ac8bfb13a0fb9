"""The offline tokenizer trainer: options that a style cannot honour are refused, not ignored."""

import pytest

from llava.tools.tokenizer import train_tokenizer


def test_legacy_prefix_is_refused_for_a_byte_level_style():
    with pytest.raises(ValueError, match="legacy_prefix is a Metaspace option; style 'qwen' is byte-level"):
        train_tokenizer(["a red circle"], vocab_size=300, legacy_prefix=True, style="qwen")
    assert train_tokenizer(["a red circle"], vocab_size=300, legacy_prefix=True).backend_tokenizer is not None
