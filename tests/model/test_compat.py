"""llava.model.compat: the KV cache under either transformers release's name."""

from __future__ import annotations

import pytest
from transformers import DynamicCache

from llava.model.compat import KV_CACHE_NAMES, kv_cache, pop_kv_cache


@pytest.mark.parametrize("name", KV_CACHE_NAMES)
def test_the_cache_is_found_and_removed_under_either_name(name):
    cache = DynamicCache()
    kwargs = {name: cache, "use_cache": True}
    assert kv_cache(kwargs) is cache
    assert pop_kv_cache(kwargs) is cache
    assert kwargs == {"use_cache": True}


def test_no_cache_is_none_and_a_none_entry_is_removed():
    kwargs = {"cache": None}
    assert kv_cache({}) is None
    assert pop_kv_cache(kwargs) is None and kwargs == {}
