"""Qwen3 dense models as a pure function (Qwen Team 2025, "Qwen3 Technical Report").

Architectural features, each with its source:
- a Llama block (`models/llama.py`): pre-norm RMSNorm, SwiGLU MLP, RoPE, grouped-query
  attention, optional biases on q/k/v/o (`attention_bias`), tied or untied embeddings;
- QK-norm (Dehghani et al. 2023, "Scaling Vision Transformers to 22B Parameters"): an
  RMSNorm over `d_head` of each query and key head, after the projection and before RoPE,
  with sites `attn.q_norm.hook_scale|hook_normalized` and `attn.k_norm...` (the names of
  TransformerLens's `q_norm`/`k_norm` modules, as in `models/gemma3.py`);
- incremental decoding with a KV cache (`decode`), every site firing at every step.

Qwen2/Qwen2.5 (q/k/v biases, no QK-norm) are in the Llama family (`models/llama.py`).

Reference: HF transformers `Qwen3ForCausalLM`; tests check max |logit diff| <= 1e-4
(float32, tiny random configs with and without `attention_bias`).
"""

from __future__ import annotations

import dataclasses
import functools
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
    """`llama.Config` fields; Qwen3's `attention_bias` sets `qkv_bias` and `o_bias`."""

    model_type: str = "qwen3"


HF_TYPES = ("qwen3",)


def config_from_hf(hf: dict) -> Config:
    """Config from an HF `Qwen3Config` dict."""
    mt = hf.get("model_type", "qwen3")
    if mt not in HF_TYPES:
        raise CheckpointError(f"model_type {mt!r} is not a Qwen3 type {HF_TYPES}")
    if hf.get("use_sliding_window"):
        raise CheckpointError("Qwen3 with use_sliding_window=True is not supported")
    bias = bool(hf.get("attention_bias", False))
    return Config(**{**llama.hf_fields(hf), "model_type": mt}, qkv_bias=bias, o_bias=bias)


# ------------------------------------------------------------------------------ sites


def site_names(cfg: Config) -> list[str]:
    """Every site of the forward, in the order the forward visits them: Llama's, with the
    QK-norm sites between `attn.hook_v` and `attn.hook_rot_q`."""
    names = []
    for s in llama.site_names(cfg):
        names.append(s)
        if s.endswith(".attn.hook_v"):
            b = s[: -len(".hook_v")]
            names += [f"{b}.{n}_norm.{h}" for n in "qk" for h in ("hook_scale", "hook_normalized")]
    return names


# ---------------------------------------------------------------------------- forward


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
    a = p["attn"]
    b = f"blocks.{l}.attn"
    q, k, v = llama.qkv(p, resid, cfg, hook, l)
    q = nn.rms_norm(q, a["q_norm"]["w"], cfg.eps, hook, f"{b}.q_norm")
    k = nn.rms_norm(k, a["k_norm"]["w"], cfg.eps, hook, f"{b}.k_norm")
    inv_freq = nn.rope_inv_freq(cfg.d_head, cfg.rope_theta, dict(cfg.rope_scaling or ()))
    return llama.rotary_attention(
        a, q, k, v, cfg, hook, l, positions, mask, cache, start, (inv_freq, None)
    )


SUBLAYERS = llama.Sublayers(_attention, llama.SUBLAYERS.mlp)
# forward(params, tokens, cfg, *, hook, attention_mask) and decode(..., cache, ...), as Llama's
forward, decode = llama.forward_and_decode(
    functools.partial(llama._transformer, sublayers=SUBLAYERS)
)


# ------------------------------------------------------------------------ conversion


def params_from_hf(tensors: dict[str, np.ndarray], cfg: Config, dtype=jnp.float32) -> Params:
    """TransformerLens-named params from HF Qwen3 tensors: Llama's plus
    `self_attn.q_norm` / `k_norm` as `attn.q_norm.w` / `attn.k_norm.w` [d_head]."""
    get = llama.tensor_getter(tensors, cfg)
    blocks = []
    for l in range(cfg.n_layers):
        pre = f"model.layers.{l}"
        attn = llama.attn_from_hf(get, cfg, l)
        attn["q_norm"] = {"w": get(f"{pre}.self_attn.q_norm.weight")}
        attn["k_norm"] = {"w": get(f"{pre}.self_attn.k_norm.weight")}
        blocks.append(
            {
                "ln1": {"w": get(f"{pre}.input_layernorm.weight")},
                "attn": attn,
                "ln2": {"w": get(f"{pre}.post_attention_layernorm.weight")},
                "mlp": llama.mlp_from_hf(get, cfg, l),
            }
        )
    return llama.assemble(get, tensors, cfg, blocks, param_shapes(cfg), dtype)


def param_shapes(cfg: Config) -> Params:
    """The expected shape of every parameter, as a pytree of tuples."""
    shapes = llama.param_shapes(cfg)
    norms = {"q_norm": {"w": (cfg.d_head,)}, "k_norm": {"w": (cfg.d_head,)}}
    block = shapes["blocks"][0] if shapes["blocks"] else None
    if block is not None:
        block = {**block, "attn": {**block["attn"], **norms}}
    return {**shapes, "blocks": [block] * cfg.n_layers}


def init(key: Array, cfg: Config, scale: float = 0.02, dtype=jnp.float32) -> Params:
    """Random params (normal, std `scale`; norm gains near 1), for tests and training studies."""
    params = nn.init_from_shapes(key, param_shapes(cfg), scale, dtype)
    if cfg.tie_embeddings:
        params["unembed"]["W_U"] = params["embed"]["W_E"].T
    return params
