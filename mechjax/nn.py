"""Shared neural-network primitives with their sites: norms, RoPE, attention, MLPs.

Each primitive that holds TransformerLens sites takes the `hook` and a site prefix, so a
family's forward stays one readable line per sublayer while every site is still one
explicit `hook(name, x)` call.

Numerics follow HF transformers (the reference every family is tested against):
RMSNorm in float32 as `x / sqrt(mean(x^2) + eps) * w`, LayerNorm with biased variance,
RoPE in the rotate-half layout HF uses (llama.cpp's interleaved layout is undone when a
GGUF file is read), softmax in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mechjax.hooks import Hook
from mechjax.typing import is_tracer

Array = jax.Array


def rms_norm(x: Array, w: Array | None, eps: float, hook: Hook, prefix: str, *, offset=0.0):
    """RMSNorm with sites `{prefix}.hook_scale` ([..., 1]) and `{prefix}.hook_normalized`."""
    scale = jnp.sqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)
    scale = hook(f"{prefix}.hook_scale", scale)
    x = hook(f"{prefix}.hook_normalized", x / scale)
    return x if w is None else x * (w + offset)


def layer_norm(x: Array, w: Array, b: Array, eps: float, hook: Hook, prefix: str):
    """LayerNorm with sites `{prefix}.hook_scale` and `{prefix}.hook_normalized`."""
    x = x - jnp.mean(x, axis=-1, keepdims=True)
    scale = jnp.sqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)
    scale = hook(f"{prefix}.hook_scale", scale)
    x = hook(f"{prefix}.hook_normalized", x / scale)
    return x * w + b


# ---------------------------------------------------------------------------- RoPE


def rope_inv_freq(rotary_dim: int, theta: float, scaling: dict | None = None) -> Array:
    """Inverse frequencies of RoPE, with HF's `rope_scaling` types linear and llama3."""
    inv = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=float) / rotary_dim))
    if not scaling:
        return inv
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return inv
    if kind == "linear":
        return inv / scaling["factor"]
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_ctx = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        low_wl, high_wl = old_ctx / low, old_ctx / high
        smooth = (old_ctx / wavelen - low) / (high - low)
        scaled = jnp.where(wavelen > low_wl, inv / factor, inv)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wavelen >= high_wl) & (wavelen <= low_wl)
        return jnp.where(is_mid, mid, scaled)
    raise ValueError(f"unsupported rope_scaling type {kind!r}; supported: default, linear, llama3")


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
    """Rotate `x` [batch, pos, heads, d_head] by `positions` [batch, pos] (rotate-half).

    Only the first `2 * len(inv_freq)` dimensions rotate (partial rotary, GPT-NeoX).
    """
    rot = 2 * inv_freq.shape[0]
    wide = jnp.promote_types(x.dtype, jnp.float32)
    angles = positions[..., None].astype(wide) * inv_freq.astype(wide)  # [batch, pos, rot/2]
    cos = jnp.concatenate([jnp.cos(angles)] * 2, -1)[:, :, None, :]
    sin = jnp.concatenate([jnp.sin(angles)] * 2, -1)[:, :, None, :]
    xr, xp = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = jnp.concatenate([-xr[..., half:], xr[..., :half]], -1)
    out = (xr * cos + rotated * sin).astype(x.dtype)
    return jnp.concatenate([out, xp], -1) if xp.shape[-1] else out


# ---------------------------------------------------------------------------- attention


def attention_mask(
    q_positions: Array, k_positions: Array, key_mask: Array | None, window: int | None
) -> Array:
    """Boolean [batch, 1, q, k]: causal, padding and (optional) sliding-window mask.

    Positions are the model's position ids, so left-padded prompts line up.
    """
    causal = k_positions[:, None, :] <= q_positions[:, :, None]
    if window is not None:
        causal &= k_positions[:, None, :] > q_positions[:, :, None] - window
    if key_mask is not None:
        causal &= key_mask[:, None, :]
    return causal[:, None]


def attend(
    q: Array,
    k: Array,
    v: Array,
    mask: Array,
    hook: Hook,
    prefix: str,
    *,
    scale: float,
    softcap: float | None = None,
) -> Array:
    """Scaled dot-product attention with GQA, sites `attn_scores`, `pattern`, `z`.

    q: [batch, q_pos, n_heads, d_head]; k, v: [batch, k_pos, n_kv_heads, d_head].
    Query head h reads key/value head h // (n_heads // n_kv_heads), as in HF's repeat_kv.
    Returns z [batch, q_pos, n_heads, d_head].
    """
    b, qp, h, dh = q.shape
    kvh = k.shape[2]
    g = h // kvh
    qg = q.reshape(b, qp, kvh, g, dh)
    # One query (a decoding step): batched matmuls over (batch, kv head) that read the
    # KV cache in the layouts `kv_cache` stores (keys [.., d_head, pos], values
    # [.., pos, d_head]), so XLA copies neither; the general einsum below made it
    # transpose the whole key cache every step.
    one = qp == 1
    if one:
        scores = jax.lax.dot_general(
            qg[:, 0], k.transpose(0, 2, 3, 1), (((3,), (2,)), ((0, 1), (0, 1)))
        )  # [b, kv, g, k_pos]
        scores = scores.reshape(b, h, 1, k.shape[1]) * scale
    else:
        scores = jnp.einsum("bqkgd,bskd->bkgqs", qg, k).reshape(b, h, qp, k.shape[1]) * scale
    if softcap is not None:
        scores = jnp.tanh(scores / softcap) * softcap
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    scores = hook(f"{prefix}.hook_attn_scores", scores)
    wide = jnp.promote_types(scores.dtype, jnp.float32)  # bf16 scores: softmax in f32
    pattern = jax.nn.softmax(scores.astype(wide), axis=-1).astype(q.dtype)
    pattern = hook(f"{prefix}.hook_pattern", pattern)
    if one:
        pg = pattern.reshape(b, kvh, g, -1)
        z = jax.lax.dot_general(pg, v.transpose(0, 2, 1, 3), (((3,), (2,)), ((0, 1), (0, 1))))[
            :, None
        ]  # [b, 1, kv, g, d]
    else:
        z = jnp.einsum("bkgqs,bskd->bqkgd", pattern.reshape(b, kvh, g, qp, -1), v)
    return hook(f"{prefix}.hook_z", z.reshape(b, qp, h, dh))


# Token counts up to this use the per-head batched projection (see `head_proj`).
SMALL_PROJ_TOKENS = 64


@jax.tree_util.register_pytree_node_class
class ModelMajorHeads:
    """A head weight [heads, d_model, d_head] kept in the layout [d_model, heads, d_head].

    In that layout the projection of a few tokens is one plain matmul that reads the
    weight contiguously, about 1.5x faster on CPU than the per-head batched form (see
    `head_proj`). Generation relayouts W_Q, W_K and W_V this way once per decode loop
    (`model_major_heads`) and every step then reads them so; the model's parameters,
    sites and hooks are unchanged. `shape` is the logical [heads, d_model, d_head].
    """

    def __init__(self, w: Array):
        self.w = w

    @property
    def shape(self) -> tuple[int, ...]:
        d, h, dh = self.w.shape
        return (h, d, dh)

    @property
    def dtype(self):
        return self.w.dtype

    def tree_flatten(self):
        return (self.w,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


def model_major_heads(params):
    """`params` with every W_Q, W_K and W_V ([heads, d_model, d_head]) as a
    `ModelMajorHeads`. The copies sit behind an optimization barrier so that XLA makes
    them once where this is called, not inside a loop that reads them."""

    def walk(node):
        if isinstance(node, dict):
            return {
                k: (
                    ModelMajorHeads(jax.lax.optimization_barrier(v.transpose(1, 0, 2)))
                    if k in ("W_Q", "W_K", "W_V") and getattr(v, "ndim", 0) == 3
                    else walk(v)
                )
                for k, v in node.items()
            }
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v) for v in node)
        return node

    return walk(params)


def head_proj(x: Array, W: Array | ModelMajorHeads, b: Array | None = None) -> Array:
    """Per-head projection: x [batch, pos, (heads,) d_model] @ W [heads, d_model, d_head].

    Returns [batch, pos, heads, d_head] (+ b [heads, d_head]). Same numbers either way;
    the formulation is a speed choice. `W` keeps TransformerLens's [heads, d_model,
    d_head] layout, which a plain matmul cannot read without first copying it to
    [d_model, heads * d_head], and on CPU that copy costs more than the matmul itself
    when few tokens are projected (decoding, a single IOI pair). For up to
    `SMALL_PROJ_TOKENS` tokens the heads are a batch axis of the matmul instead, so each
    head reads its own contiguous [d_model, d_head] slice and no weight is copied; for
    more tokens the copy is amortised and one wide matmul wins.
    """
    if isinstance(W, ModelMajorHeads):
        d, h, dh = W.w.shape
        if x.ndim == 4:
            y = jnp.einsum("bphm,mhd->bphd", x, W.w)
        else:
            y = (x @ W.w.reshape(d, h * dh)).reshape(*x.shape[:-1], h, dh)
    elif x.ndim == 4:  # split inputs: each head has its own input already
        y = jnp.einsum("bphm,hmd->bphd", x, W)
    elif x.shape[0] * x.shape[1] <= SMALL_PROJ_TOKENS:
        bsz, pos, d = x.shape
        xb = jnp.broadcast_to(x.reshape(1, bsz * pos, d), (W.shape[0], bsz * pos, d))
        y = jax.lax.dot_general(xb, W, (((2,), (1,)), ((0,), (0,))))  # [heads, tokens, d_head]
        y = y.reshape(W.shape[0], bsz, pos, W.shape[2]).transpose(1, 2, 0, 3)
    else:
        y = jnp.einsum("bpm,hmd->bphd", x, W)
    return y if b is None else y + b


def attn_output(z: Array, W_O: Array, b_O: Array | None, hook: Hook, prefix: str) -> Array:
    """Per-head result (only if asked) and the summed attention output.

    The sum over heads is one matmul of z [batch, pos, heads * d_head] with W_O viewed
    as [heads * d_head, d_model] (a free reshape of its layout); the einsum form let XLA
    contract (d_head, heads) in the other order and copy W_O on every call.
    """
    result_site = f"{prefix}.hook_result"
    if hook.wants(result_site):
        result = hook(result_site, jnp.einsum("bphd,hdm->bphm", z, W_O))
        out = result.sum(axis=2)
    else:
        bsz, pos, h, dh = z.shape
        out = jax.lax.dot_general(
            z.reshape(bsz, pos, h * dh), W_O.reshape(h * dh, -1), (((2,), (0,)), ((), ()))
        )
    return out if b_O is None else out + b_O


def unembed(x: Array, p: dict) -> Array:
    """Logits x [..., d_model] @ W_U (+ b_U) for `p` = params["unembed"].

    If `p` also holds `W_U_T` (W_U transposed, [d_vocab, d_model], added by the generation
    loop once per call and never stored in a model), the logits are computed as
    W_U_T @ x^T: for a handful of rows (decoding) that matmul reads the large matrix
    row by row and runs about 3x faster on CPU than x @ W_U. The barrier keeps XLA from
    folding the final transpose into the matmul's output layout, which undoes the gain.
    """
    if "W_U_T" in p:
        lead = x.shape[:-1]
        y = jax.lax.optimization_barrier(p["W_U_T"] @ x.reshape(-1, x.shape[-1]).T)
        logits = y.T.reshape(lead + (y.shape[0],))
    else:
        logits = x @ p["W_U"]
    return logits + p["b_U"] if "b_U" in p else logits


def positions_from_mask(attention_mask: Array | None, shape) -> Array:
    """Position ids: 0..n-1, or counted over real tokens when a padding mask is given."""
    if attention_mask is None:
        return jnp.broadcast_to(jnp.arange(shape[1]), shape)
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)


def embed(W_E: Array, tokens: Array) -> Array:
    """Token embedding; an out-of-vocabulary id gives NaN (never a silent wrong row)."""
    return W_E.at[tokens].get(mode="fill", fill_value=jnp.nan)


def init_from_shapes(key: Array, shapes, scale: float, dtype=jnp.float32):
    """Random params for a pytree of shape tuples: normal(0, scale), norm gains `w` near 1.

    One normal draw cut into pieces: a draw per shape would compile once per shape when
    run eagerly. Traceable too (`jax.eval_shape`, `jit`): then the pieces are jnp slices.
    """
    import numpy as np

    def is_shape(x):
        return isinstance(x, tuple)

    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes, is_leaf=is_shape)
    sizes = [int(np.prod(shape)) for _, shape in flat]
    noise = scale * jax.random.normal(key, (sum(sizes),), dtype)
    xp = jnp if is_tracer(noise) else np
    pieces = xp.split(noise if xp is jnp else np.asarray(noise), np.cumsum(sizes)[:-1])
    out = []
    for (path, shape), piece in zip(flat, pieces):
        x = piece.reshape(shape)
        out.append(jnp.asarray(x + 1 if jax.tree_util.keystr(path).endswith("['w']") else x))
    return jax.tree.unflatten(treedef, out)


def check_param_shapes(params, shapes) -> None:
    """Raise `CheckpointError` naming the first parameter whose shape the config rejects."""
    from mechjax.errors import CheckpointError

    want = dict(
        jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))[0]
    )
    for path, arr in jax.tree_util.tree_flatten_with_path(params)[0]:
        exp = want.get(path)
        if exp is not None and tuple(arr.shape) != exp:
            raise CheckpointError(
                f"parameter {jax.tree_util.keystr(path)} has shape {tuple(arr.shape)}, "
                f"config expects {exp}"
            )
