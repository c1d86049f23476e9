"""Phi-3 (and Phi-3.5 / Phi-4-mini) as a pure function (Abdin et al. 2024, "Phi-3 Technical
Report").

Architectural features, each with its source:
- a Llama block (`models/llama.py`): pre-norm RMSNorm, SwiGLU MLP, grouped-query
  attention, no biases, optional sliding-window attention (Phi-3-mini-4k: 2047);
- fused projections in the checkpoint, `self_attn.qkv_proj` ([q; k; v] rows) and
  `mlp.gate_up_proj` ([gate; up] rows), split on load into TransformerLens's `W_Q, W_K,
  W_V` and `W_gate, W_in`, so every head and every neuron has its own sites and weights;
- partial rotary embeddings (Su et al. 2021): only the first
  `rotary_dim = int(d_head * partial_rotary_factor)` dimensions of each head rotate
  (Phi-4-mini: 0.75), rotate-half layout;
- LongRoPE (Ding et al. 2024, "LongRoPE"; Phi-3-*-128k, Phi-3.5): per-frequency
  rescaling factors, `short_factor` while the longest position of the call is within
  `original_max_position_embeddings` and `long_factor` beyond (HF's rule: one choice per
  call, from the largest position id), and the attention factor
  `sqrt(1 + ln(max_pos / original_max) / ln(original_max))` on the rotated dimensions;
- incremental decoding with a KV cache (`decode`). With LongRoPE, a generation that
  grows past `original_max_position_embeddings` keeps the keys cached before the switch
  in their short-factor rotation, as HF's cache does; it is then not a recomputation of
  the whole sequence, which rotates every key with the long factors.

Sites are Llama's (`hook_rot_q/k` hold the rotated, LongRoPE-scaled queries and keys the
scores read).

Reference: HF transformers `Phi3ForCausalLM`; tests check max |logit diff| <= 1e-4
(float32, tiny random configs: full rotary, partial rotary, LongRoPE with short and long
factors).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import nn
from mechjax.errors import CheckpointError
from mechjax.hooks import Hook
from mechjax.kv_cache import KVCache

from . import llama

Array = jax.Array
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config(llama.Config):
    """`llama.Config` plus partial rotary and LongRoPE (`short_factor`/`long_factor` hold
    `rotary_dim // 2` factors each, or None for plain RoPE)."""

    rotary_dim: int = 0  # 0: the whole head
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    original_ctx: int = 4096
    rope_attention_factor: float = 1.0
    model_type: str = "phi3"

    def __post_init__(self):
        super().__post_init__()
        if not self.rotary_dim:
            object.__setattr__(self, "rotary_dim", self.d_head)
        if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.d_head:
            raise ValueError(f"rotary_dim={self.rotary_dim} must be even and in (0, d_head]")
        for name in ("short_factor", "long_factor"):
            f = getattr(self, name)
            if f is not None and len(f) != self.rotary_dim // 2:
                raise ValueError(
                    f"{name} has {len(f)} entries; rotary_dim={self.rotary_dim} needs "
                    f"{self.rotary_dim // 2}"
                )
        if (self.short_factor is None) != (self.long_factor is None):
            raise ValueError("LongRoPE needs both short_factor and long_factor")


HF_TYPES = ("phi3",)


def config_from_hf(hf: dict) -> Config:
    """Config from an HF `Phi3Config` dict (rope settings at the top level, as checkpoints'
    config.json has them, or in transformers >= 5's `rope_parameters`)."""
    mt = hf.get("model_type", "phi3")
    if mt not in HF_TYPES:
        raise CheckpointError(f"model_type {mt!r} is not a Phi-3 type {HF_TYPES}")
    fields = {**llama.hf_fields(hf), "model_type": mt, "rope_scaling": None}
    rope = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    partial = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    long: dict[str, Any] = {}
    if kind in ("longrope", "su"):
        orig = rope.get("original_max_position_embeddings") or hf.get(
            "original_max_position_embeddings", fields["n_ctx"]
        )
        factor = rope.get("factor") or fields["n_ctx"] / orig
        attn = rope.get("attention_factor")
        if attn is None:
            attn = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(orig))
        long = dict(
            short_factor=tuple(float(x) for x in rope["short_factor"]),
            long_factor=tuple(float(x) for x in rope["long_factor"]),
            original_ctx=int(orig),
            rope_attention_factor=float(attn),
        )
    elif kind not in ("default", None):
        raise CheckpointError(f"Phi-3 rope type {kind!r} is not supported (default, longrope)")
    return Config(
        **fields,
        rotary_dim=int(fields["d_head"] * partial),
        sliding_window=hf.get("sliding_window"),
        **long,
    )


# ------------------------------------------------------------------------------ sites


def site_names(cfg: Config) -> list[str]:
    """Every site of the forward, in forward order (Llama's)."""
    return llama.site_names(cfg)


# ---------------------------------------------------------------------------- forward


def rope(cfg: Config, positions: Array) -> tuple[Array, Any]:
    """(inverse frequencies, factor on the rotated dims) for a call at `positions`."""
    inv = nn.rope_inv_freq(cfg.rotary_dim, cfg.rope_theta)
    if cfg.long_factor is None:
        return inv, None
    short = inv / jnp.asarray(cfg.short_factor, inv.dtype)
    long = inv / jnp.asarray(cfg.long_factor, inv.dtype)
    # HF picks one table per call from its largest position id (traced, so no recompile)
    inv = jnp.where(jnp.max(positions) + 1 > cfg.original_ctx, long, short)
    return inv, cfg.rope_attention_factor


def _attention(
    p: Params,
    resid: Array,
    cfg: Config,
    hook: Hook,
    l: int,
    positions,
    mask,
    cache: KVCache | None = None,
    start: Any = None,
):
    q, k, v = llama.qkv(p, resid, cfg, hook, l)
    return llama.rotary_attention(
        p["attn"], q, k, v, cfg, hook, l, positions, mask, cache, start, rope(cfg, positions)
    )


SUBLAYERS = llama.Sublayers(_attention, llama.SUBLAYERS.mlp)
# forward(params, tokens, cfg, *, hook, attention_mask) and decode(..., cache, ...), as Llama's
forward, decode = llama.forward_and_decode(
    functools.partial(llama._transformer, sublayers=SUBLAYERS)
)


# ------------------------------------------------------------------------ conversion


def unfuse(tensors: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    """HF Phi-3 tensors with `qkv_proj` and `gate_up_proj` split into Llama's names."""
    out = dict(tensors)
    q, kv = cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head
    for l in range(cfg.n_layers):
        pre = f"model.layers.{l}"
        for fused, parts, sizes in (
            ("self_attn.qkv_proj", ("q_proj", "k_proj", "v_proj"), (q, kv, kv)),
            ("mlp.gate_up_proj", ("gate_proj", "up_proj"), (cfg.d_mlp, cfg.d_mlp)),
        ):
            name = f"{pre}.{fused}.weight"
            if name not in out:
                continue
            w = out.pop(name)
            if w.shape[0] != sum(sizes):
                raise CheckpointError(
                    f"{name} has {w.shape[0]} rows; the config needs {' + '.join(map(str, sizes))}"
                )
            cuts = np.cumsum(sizes)[:-1]
            where = fused.split(".")[0]
            for part, piece in zip(parts, np.split(np.asarray(w), cuts)):
                out[f"{pre}.{where}.{part}.weight"] = piece
    return out


def params_from_hf(tensors: dict[str, np.ndarray], cfg: Config, dtype=jnp.float32) -> Params:
    """TransformerLens-named params from HF Phi-3 tensors (fused projections split)."""
    return llama.params_from_hf(unfuse(tensors, cfg), cfg, dtype)


def param_shapes(cfg: Config) -> Params:
    """The expected shape of every parameter, as a pytree of tuples (Llama's)."""
    return llama.param_shapes(cfg)


def init(key: Array, cfg: Config, scale: float = 0.02, dtype=jnp.float32) -> Params:
    """Random params (normal, std `scale`; norm gains near 1), for tests and training studies."""
    return llama.init(key, cfg, scale, dtype)
