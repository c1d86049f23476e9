"""OLMo 2 as a pure function (Team OLMo 2024, "2 OLMo 2 Furious").

Architectural features, each with its source:
- post-norm placement inside the residual branch (OLMo 2 report, section 3.2): no norm
  before attention or the MLP; RMSNorm after each, on the sublayer output before it joins
  the residual stream, `resid_mid = resid_pre + ln1_post(attn(resid_pre))` and
  `resid_post = resid_mid + ln2_post(mlp(resid_mid))`. Sites `ln1_post` / `ln2_post`
  (`hook_scale`, `hook_normalized`), the names of the Gemma 2 port for the same norms;
- QK-norm (Dehghani et al. 2023) over the whole projected query (all heads together,
  `n_heads * d_head` gains) and the whole key, before RoPE. Sites
  `attn.q_norm.hook_scale` [batch, pos, 1, 1] (one statistic over every head) and
  `attn.q_norm.hook_normalized` [batch, pos, n_heads, d_head], and `attn.k_norm...`;
- SwiGLU MLP, RoPE, grouped-query attention, optional q/k/v/o biases, untied embeddings;
- incremental decoding with a KV cache (`decode`).

EAP's split q/k/v inputs: each head reads its own copy of the (unnormalised) residual
stream. Because the QK-norm statistic spans every head, head h's query is computed from
the full query projection of *its* copy (`n_heads` times the projection work, only when
split inputs are asked for), so an edge into one head's query changes that head alone;
`q_norm.hook_scale` is then one statistic per copy, [batch, pos, n_heads, 1].

Reference: HF transformers `Olmo2ForCausalLM`; tests check max |logit diff| <= 1e-4
(float32, tiny random configs, MHA and GQA).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import nn
from mechjax.errors import CheckpointError
from mechjax.hooks import Hook

from . import llama

Array = jax.Array
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config(llama.Config):
    """`llama.Config` fields; OLMo 2's `attention_bias` sets `qkv_bias` and `o_bias`."""

    model_type: str = "olmo2"


HF_TYPES = ("olmo2",)


def config_from_hf(hf: dict) -> Config:
    """Config from an HF `Olmo2Config` dict."""
    mt = hf.get("model_type", "olmo2")
    if mt not in HF_TYPES:
        raise CheckpointError(f"model_type {mt!r} is not an OLMo 2 type {HF_TYPES}")
    bias = bool(hf.get("attention_bias", False))
    return Config(**{**llama.hf_fields(hf), "model_type": mt}, qkv_bias=bias, o_bias=bias)


# ------------------------------------------------------------------------------ sites


def site_names(cfg: Config) -> list[str]:
    """Every site of the forward, in the order the forward visits them."""
    names = ["hook_embed"]
    for l in range(cfg.n_layers):
        b = f"blocks.{l}"
        names += [
            f"{b}.hook_resid_pre",
            f"{b}.hook_q_input",
            f"{b}.hook_k_input",
            f"{b}.hook_v_input",
            f"{b}.attn.hook_q",
            f"{b}.attn.hook_k",
            f"{b}.attn.hook_v",
            f"{b}.attn.q_norm.hook_scale",
            f"{b}.attn.q_norm.hook_normalized",
            f"{b}.attn.k_norm.hook_scale",
            f"{b}.attn.k_norm.hook_normalized",
            f"{b}.attn.hook_rot_q",
            f"{b}.attn.hook_rot_k",
            f"{b}.attn.hook_attn_scores",
            f"{b}.attn.hook_pattern",
            f"{b}.attn.hook_z",
            f"{b}.attn.hook_result",
            f"{b}.ln1_post.hook_scale",
            f"{b}.ln1_post.hook_normalized",
            f"{b}.hook_attn_out",
            f"{b}.hook_resid_mid",
            f"{b}.hook_mlp_in",
            f"{b}.mlp.hook_pre",
            f"{b}.mlp.hook_pre_linear",
            f"{b}.mlp.hook_post",
            f"{b}.ln2_post.hook_scale",
            f"{b}.ln2_post.hook_normalized",
            f"{b}.hook_mlp_out",
            f"{b}.hook_resid_post",
        ]
    return names + ["ln_final.hook_scale", "ln_final.hook_normalized"]


# ---------------------------------------------------------------------------- forward


def _logical(W) -> Array:
    """A head weight as [heads, d_model, d_head] (generation may hand a relaid one)."""
    return W.w.transpose(1, 0, 2) if isinstance(W, nn.ModelMajorHeads) else W


def _normed(x: Array, full: Array | None, w: Array, cfg: Config, hook: Hook, prefix: str) -> Array:
    """OLMo 2's QK-norm of x [batch, pos, heads, d_head], one statistic over all heads.

    With split inputs, `full` [batch, pos, heads (copies), heads, d_head] holds every
    head's projection of each copy's input and each copy is normalised by its own.
    """
    src = x[:, :, None] if full is None else full
    ms = jnp.mean(jnp.square(src), axis=(-2, -1))  # [batch, pos, 1 or copies]
    scale = hook(f"{prefix}.hook_scale", jnp.sqrt(ms + cfg.eps)[..., None])
    return hook(f"{prefix}.hook_normalized", x / scale) * w.reshape(x.shape[-2:])


def _project(p: Params, resid: Array, cfg: Config, hook: Hook, l: int, s: str, n: int):
    """(projection [batch, pos, n, d_head] at `attn.hook_{s}`, the split path's full
    projection of each copy or None)."""
    b, a = f"blocks.{l}", p["attn"]
    W, bias = a[f"W_{s.upper()}"], a.get(f"b_{s.upper()}")
    if not any(hook.wants(f"{b}.hook_{t}_input") for t in "qkv"):
        return hook(f"{b}.attn.hook_{s}", nn.head_proj(resid, W, bias)), None
    x = jnp.broadcast_to(resid[:, :, None, :], resid.shape[:2] + (n, cfg.d_model))
    x = hook(f"{b}.hook_{s}_input", x)
    if s == "v":  # no norm across heads: each copy needs only its own head
        return hook(f"{b}.attn.hook_v", nn.head_proj(x, W, bias)), None
    full = jnp.einsum("bphm,Hmd->bphHd", x, _logical(W))
    if bias is not None:
        full = full + bias
    eye = jnp.eye(n, dtype=bool)[:, :, None]  # copy h, head H: h == H
    own = hook(f"{b}.attn.hook_{s}", jnp.sum(jnp.where(eye, full, 0), axis=3))
    return own, jnp.where(eye, own[:, :, :, None], full)  # the hooked value in the stats


def _attention(p, resid, cfg, hook, l, positions, mask, cache=None, start=None):
    a = p["attn"]
    q, q_full = _project(p, resid, cfg, hook, l, "q", cfg.n_heads)
    k, k_full = _project(p, resid, cfg, hook, l, "k", cfg.n_kv_heads)
    v, _ = _project(p, resid, cfg, hook, l, "v", cfg.n_kv_heads)
    q = _normed(q, q_full, a["q_norm"]["w"], cfg, hook, f"blocks.{l}.attn.q_norm")
    k = _normed(k, k_full, a["k_norm"]["w"], cfg, hook, f"blocks.{l}.attn.k_norm")
    inv_freq = nn.rope_inv_freq(cfg.d_head, cfg.rope_theta, dict(cfg.rope_scaling or ()))
    return llama.rotary_attention(
        a, q, k, v, cfg, hook, l, positions, mask, cache, start, (inv_freq, None)
    )


def _transformer(
    params,
    tokens,
    cfg,
    hook,
    positions,
    mask,
    cache: Any = None,
    start: Any = None,
    last_only=False,
):
    resid = hook("hook_embed", nn.embed(params["embed"]["W_E"], tokens))
    for l, p in enumerate(params["blocks"]):
        b = f"blocks.{l}"
        resid = hook(f"{b}.hook_resid_pre", resid)
        attn, cache = _attention(p, resid, cfg, hook, l, positions, mask, cache, start)
        attn = nn.rms_norm(attn, p["ln1_post"]["w"], cfg.eps, hook, f"{b}.ln1_post")
        resid = hook(f"{b}.hook_resid_mid", resid + hook(f"{b}.hook_attn_out", attn))
        mlp_in = hook(f"{b}.hook_mlp_in", resid) if hook.wants(f"{b}.hook_mlp_in") else resid
        mlp = llama.SUBLAYERS.mlp(p, mlp_in, cfg, hook, l)
        mlp = nn.rms_norm(mlp, p["ln2_post"]["w"], cfg.eps, hook, f"{b}.ln2_post")
        resid = hook(f"{b}.hook_resid_post", resid + hook(f"{b}.hook_mlp_out", mlp))
    x = nn.rms_norm(resid, params["ln_final"]["w"], cfg.eps, hook, "ln_final")
    if last_only:
        x = x[:, -1:]
    return nn.unembed(x, params["unembed"]), cache


# forward(params, tokens, cfg, *, hook, attention_mask) and decode(..., cache, ...), as Llama's
forward, decode = llama.forward_and_decode(_transformer)


# ------------------------------------------------------------------------ conversion


def params_from_hf(tensors: dict[str, np.ndarray], cfg: Config, dtype=jnp.float32) -> Params:
    """TransformerLens-named params from HF OLMo 2 tensors: Llama's projections, the
    QK-norm gains [n_heads * d_head] and [n_kv_heads * d_head], and the post-norms."""
    get = llama.tensor_getter(tensors, cfg)
    blocks = []
    for l in range(cfg.n_layers):
        pre = f"model.layers.{l}"
        attn = llama.attn_from_hf(get, cfg, l)
        attn["q_norm"] = {"w": get(f"{pre}.self_attn.q_norm.weight")}
        attn["k_norm"] = {"w": get(f"{pre}.self_attn.k_norm.weight")}
        blocks.append(
            {
                "attn": attn,
                "ln1_post": {"w": get(f"{pre}.post_attention_layernorm.weight")},
                "mlp": llama.mlp_from_hf(get, cfg, l),
                "ln2_post": {"w": get(f"{pre}.post_feedforward_layernorm.weight")},
            }
        )
    return llama.assemble(get, tensors, cfg, blocks, param_shapes(cfg), dtype)


def param_shapes(cfg: Config) -> Params:
    """The expected shape of every parameter, as a pytree of tuples."""
    shapes = llama.param_shapes(cfg)
    d, q, kv = cfg.d_model, cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head
    blocks = [
        {
            "attn": {**blk["attn"], "q_norm": {"w": (q,)}, "k_norm": {"w": (kv,)}},
            "ln1_post": {"w": (d,)},
            "mlp": blk["mlp"],
            "ln2_post": {"w": (d,)},
        }
        for blk in shapes["blocks"]
    ]
    return {**shapes, "blocks": blocks}


def init(key: Array, cfg: Config, scale: float = 0.02, dtype=jnp.float32) -> Params:
    """Random params (normal, std `scale`; norm gains near 1), for tests and training studies."""
    params = nn.init_from_shapes(key, param_shapes(cfg), scale, dtype)
    if cfg.tie_embeddings:
        params["unembed"]["W_U"] = params["embed"]["W_E"].T
    return params
