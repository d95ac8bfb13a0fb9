"""The differences between the transformers releases this project supports (5.23 and 5.24), in one place.

- The KV cache: transformers >= 5.24 hands it to attention and to `prepare_inputs_for_generation`'s
  result, and takes it in the models' `forward`, as `cache`; 5.23 as `past_key_values`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, MutableMapping
from typing import Any

# The KV cache's argument name, newest release first.
KV_CACHE_NAMES = ("cache", "past_key_values")


def kv_cache(inputs: Mapping[str, Any]) -> Any:
    """The KV cache among `inputs` under whichever name the installed transformers uses (None if absent)."""
    for name in KV_CACHE_NAMES:
        if inputs.get(name) is not None:
            return inputs[name]
    return None


def kv_cache_keyword(decoder: Any) -> str:
    """The keyword under which `decoder.forward` (the library's `<Family>Model`) takes the KV cache."""
    parameters = inspect.signature(type(decoder).forward).parameters
    for name in KV_CACHE_NAMES:
        if name in parameters:
            return name
    raise TypeError(f"{type(decoder).__name__}.forward takes no KV cache (none of {KV_CACHE_NAMES})")


def pop_kv_cache(kwargs: MutableMapping[str, Any]) -> Any:
    """Remove the KV cache from `kwargs` under every name it may have; return it (None if absent)."""
    cache = kv_cache(kwargs)
    for name in KV_CACHE_NAMES:
        kwargs.pop(name, None)
    return cache
