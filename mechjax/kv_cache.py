"""The key/value cache of incremental decoding, shared by every family with attention.

A `KVCache` holds, for each layer, the keys (after RoPE, as the attention reads them) and
values of every token seen so far, in fixed-size slot arrays, plus the position id and
validity of each slot. Keys are stored `[batch, n_kv_heads, d_head, max_len]` and values
`[batch, n_kv_heads, max_len, d_head]`: the layouts the attention matmuls read, so no
step copies a transposed cache (`write` hands them back as `[batch, max_len, n_kv_heads,
d_head]`, which XLA folds into the matmul for free). Slots are written left to right:
a call that adds `n` tokens writes slots `[index, index + n)`. Because the buffers never
change shape, one compiled decode step serves every step of a generation loop.

Position ids are counted per row over real tokens (`next_position`), so a left-padded
prompt gets the positions it would get alone, and masks are built from position ids and
slot validity (never slot order). A family adopts the cache in its attention with three
calls (see `models/llama.py`):

    positions, cache, start = kv_cache.begin(cache, attention_mask, n_new)   # once per call
    k_all, v_all, cache = kv_cache.write(cache, layer, k, v, start)         # once per layer
    mask = nn.attention_mask(positions, cache.positions, cache.valid, window)
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mechjax.errors import InputError
from mechjax.typing import is_tracer

Array = jax.Array


@struct.dataclass
class KVCache:
    """Keys and values of the tokens seen so far, for every layer.

    Attributes:
      k: per layer `[batch, n_kv_heads, d_head, max_len]` (keys after RoPE).
      v: per layer `[batch, n_kv_heads, max_len, d_head]`.
      positions: `[batch, max_len]` int32 position id of each filled slot.
      valid: `[batch, max_len]` bool, True for a slot holding a real (non-padding) token.
      index: int32 scalar, the number of slots filled (the next slot to write).
      next_position: `[batch]` int32, the position id the next real token of each row gets.
    """

    k: tuple[Array, ...]
    v: tuple[Array, ...]
    positions: Array
    valid: Array
    index: Array
    next_position: Array

    @property
    def max_len(self) -> int:
        return self.positions.shape[1]

    @property
    def batch(self) -> int:
        return self.positions.shape[0]


def init(cfg: Any, batch: int, max_len: int, dtype=jnp.float32) -> KVCache:
    """An empty cache for `cfg` (needs `n_layers`, `n_kv_heads`, `d_head`)."""
    if batch < 1 or max_len < 1:
        raise InputError(f"a KV cache needs batch >= 1 and max_len >= 1, got {batch}, {max_len}")
    k_shape = (batch, cfg.n_kv_heads, cfg.d_head, max_len)
    v_shape = (batch, cfg.n_kv_heads, max_len, cfg.d_head)
    return KVCache(
        k=tuple(jnp.zeros(k_shape, dtype) for _ in range(cfg.n_layers)),
        v=tuple(jnp.zeros(v_shape, dtype) for _ in range(cfg.n_layers)),
        positions=jnp.zeros((batch, max_len), jnp.int32),
        valid=jnp.zeros((batch, max_len), bool),
        index=jnp.zeros((), jnp.int32),
        next_position=jnp.zeros((batch,), jnp.int32),
    )


def begin(cache: KVCache, attention_mask: Array | None, n_new: int) -> tuple[Array, KVCache, Array]:
    """Reserve slots for `n_new` tokens: their position ids, and the cache with them marked.

    Args:
      cache: the cache before this call.
      attention_mask: `[batch, n_new]` bool (True = real token) or None (all real).
      n_new: number of tokens added by this call.

    Returns:
      positions `[batch, n_new]` of the new tokens, the cache with their slots' positions
      and validity written (index and next_position advanced), and the first slot written.
    """
    concrete = not is_tracer(cache.index)  # then checked on the host
    if concrete and int(cache.index) + n_new > cache.max_len:
        raise InputError(
            f"the KV cache holds {cache.max_len} tokens; {int(cache.index)} are filled and "
            f"{n_new} more do not fit (create it with a larger max_len)"
        )
    b = cache.batch
    real = jnp.ones((b, n_new), bool) if attention_mask is None else attention_mask.astype(bool)
    counts = jnp.cumsum(real.astype(jnp.int32), axis=1)
    positions = cache.next_position[:, None] + jnp.maximum(counts - 1, 0)
    start = cache.index
    cache = dataclasses.replace(
        cache,
        positions=jax.lax.dynamic_update_slice(cache.positions, positions, (0, start)),
        valid=jax.lax.dynamic_update_slice(cache.valid, real, (0, start)),
        index=start + n_new,
        next_position=cache.next_position + counts[:, -1],
    )
    return positions, cache, start


def write(
    cache: KVCache, layer: int, k: Array, v: Array, start: Array
) -> tuple[Array, Array, KVCache]:
    """Write layer `layer`'s new keys/values at slot `start`; return all keys, values, cache.

    k, v: `[batch, n_new, n_kv_heads, d_head]`; the returned keys and values are
    `[batch, max_len, n_kv_heads, d_head]` (views of the stored layouts).
    """
    k_new = k.astype(cache.k[layer].dtype).transpose(0, 2, 3, 1)  # [b, kv, d, n]
    v_new = v.astype(cache.v[layer].dtype).transpose(0, 2, 1, 3)  # [b, kv, n, d]
    k_st = jax.lax.dynamic_update_slice(cache.k[layer], k_new, (0, 0, 0, start))
    v_st = jax.lax.dynamic_update_slice(cache.v[layer], v_new, (0, 0, start, 0))
    ks, vs = list(cache.k), list(cache.v)
    ks[layer], vs[layer] = k_st, v_st
    return (
        k_st.transpose(0, 3, 1, 2),
        v_st.transpose(0, 2, 1, 3),
        dataclasses.replace(cache, k=tuple(ks), v=tuple(vs)),
    )


def nbytes(cache: KVCache) -> int:
    """Memory held by the cache's buffers, in bytes."""
    return int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(cache)))


class DecodeOutput(NamedTuple):
    """What a family's `decode` returns: logits of the new tokens and the updated cache."""

    logits: Array
    cache: KVCache
