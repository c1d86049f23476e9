"""Names shared by annotations across mechjax, defined once.

Dimension names follow TransformerLens: `batch pos d_model n_heads n_kv_heads d_head
d_mlp d_vocab layer`; jaxtyping annotations use them (`Float[Array, "batch pos d_model"]`).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.core import Tracer

Array = jax.Array
Params = Any  # a pytree of arrays with TransformerLens paths (`blocks[3].attn.W_Q`)

__all__ = ["Array", "Params", "is_tracer"]


def is_tracer(x) -> bool:
    """True inside a trace (jit, vmap, grad), where values cannot be read on the host."""
    return isinstance(x, Tracer)
