"""Toy transformers as pure functions: 1-4 layers, attention-only or with an MLP.

The small models of the mechanistic-interpretability literature (Elhage et al. 2021,
"A Mathematical Framework for Transformer Circuits"; Olsson et al. 2022, "In-context
Learning and Induction Heads"), with TransformerLens's weight names, shapes and sites:

- learned token and positional embeddings (`embed.W_E [d_vocab, d_model]`,
  `pos_embed.W_pos [n_ctx, d_model]`), added into the residual stream;
- causal multi-head attention with biases (`W_Q, W_K, W_V [n_heads, d_model, d_head]`,
  `W_O [n_heads, d_head, d_model]`, `b_Q, b_K, b_V [n_heads, d_head]`, `b_O [d_model]`),
  scores scaled by 1/sqrt(d_head);
- an optional MLP (`W_in [d_model, d_mlp]`, `W_out [d_mlp, d_model]`, GELU or ReLU);
- optional pre-norm LayerNorm (`ln1`, `ln2`, `ln_final`, weights `w`, `b`), as in
  TransformerLens's `normalization_type="LN"`; `None` gives the pure attention-only model
  whose circuits (QK, OV, composition) are exact products of weight matrices;
- unembedding `unembed.W_U [d_model, d_vocab]`, `b_U [d_vocab]`.

Sites follow TransformerLens's `HookedTransformer`: `hook_resid_mid`, `ln2` and the MLP
sites exist only when the model has an MLP (as in TransformerLens's attention-only
blocks); `blocks.{l}.attn.hook_result` is computed only when a hook asks for it.
Reference: TransformerLens's `HookedTransformer` with the same config; this file is its
functional restatement (the test suite checks the invariants: causality, per-head results
summing to the attention output, the site list).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import nn
from mechjax.errors import InputError
from mechjax.hooks import NULL_HOOK, Hook

Array = jax.Array
Params = dict[str, Any]

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """A toy transformer. `d_mlp=None` is attention-only; `normalization=None` has no norms."""

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_vocab: int
    n_ctx: int
    d_mlp: int | None = None
    normalization: str | None = "LN"
    act_fn: str = "gelu"
    eps: float = 1e-5
    init_range: float | None = None  # std of weight init; None: 0.8 / sqrt(d_model)

    def __post_init__(self):
        if not 1 <= self.n_layers <= 4:
            raise ValueError(f"toy models have 1 to 4 layers, got n_layers={self.n_layers}")
        if self.normalization not in ("LN", None):
            raise ValueError(f"normalization must be 'LN' or None, got {self.normalization!r}")
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn {self.act_fn!r}; supported: {sorted(ACTIVATIONS)}")
        for name in ("d_model", "n_heads", "d_head", "d_vocab", "n_ctx"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def attn_only(self) -> bool:
        return self.d_mlp is None


# ---------------------------------------------------------------------------------- init


def init(key: Array, cfg: ToyConfig) -> Params:
    """Random parameters: weights ~ N(0, init_range^2), biases 0, norm weights 1.

    Deterministic per key. All weights are slices of one normal draw: one random-number
    kernel instead of one per weight (compiling threefry per weight shape is slow on CPU).
    """
    std = cfg.init_range if cfg.init_range is not None else 0.8 / cfg.d_model**0.5
    d, h, dh = cfg.d_model, cfg.n_heads, cfg.d_head
    shapes = [(cfg.d_vocab, d), (cfg.n_ctx, d)]
    for _ in range(cfg.n_layers):
        shapes += [(h, d, dh)] * 3 + [(h, dh, d)]
        if not cfg.attn_only:
            shapes += [(d, cfg.d_mlp), (cfg.d_mlp, d)]
    shapes.append((d, cfg.d_vocab))
    flat = std * jax.random.normal(key, (sum(math.prod(s) for s in shapes),))
    offsets = np.cumsum([0] + [math.prod(s) for s in shapes])
    weights = iter(flat[o : o + math.prod(s)].reshape(s) for o, s in zip(offsets, shapes))

    params: Params = {
        "embed": {"W_E": next(weights)},
        "pos_embed": {"W_pos": next(weights)},
        "blocks": [],
    }
    for _ in range(cfg.n_layers):
        block: Params = {
            "attn": {
                "W_Q": next(weights),
                "W_K": next(weights),
                "W_V": next(weights),
                "W_O": next(weights),
                "b_Q": jnp.zeros((h, dh)),
                "b_K": jnp.zeros((h, dh)),
                "b_V": jnp.zeros((h, dh)),
                "b_O": jnp.zeros((d,)),
            }
        }
        if cfg.normalization == "LN":
            block["ln1"] = _ln_params(d)
        if not cfg.attn_only:
            block["mlp"] = {
                "W_in": next(weights),
                "b_in": jnp.zeros((cfg.d_mlp,)),
                "W_out": next(weights),
                "b_out": jnp.zeros((d,)),
            }
            if cfg.normalization == "LN":
                block["ln2"] = _ln_params(d)
        params["blocks"].append(block)
    if cfg.normalization == "LN":
        params["ln_final"] = _ln_params(d)
    params["unembed"] = {"W_U": next(weights), "b_U": jnp.zeros((cfg.d_vocab,))}
    return params


def _ln_params(d: int) -> Params:
    return {"w": jnp.ones((d,)), "b": jnp.zeros((d,))}


# --------------------------------------------------------------------------------- sites


def site_names(cfg: ToyConfig) -> list[str]:
    """Every site of the forward, in the order the forward visits them."""
    names = ["hook_embed", "hook_pos_embed"]
    ln = cfg.normalization is not None
    for l in range(cfg.n_layers):
        b = f"blocks.{l}"
        names.append(f"{b}.hook_resid_pre")
        if ln:
            names += [f"{b}.ln1.hook_scale", f"{b}.ln1.hook_normalized"]
        names += [
            f"{b}.attn.hook_{s}" for s in ("q", "k", "v", "attn_scores", "pattern", "z", "result")
        ]
        names.append(f"{b}.hook_attn_out")
        if not cfg.attn_only:
            names.append(f"{b}.hook_resid_mid")
            if ln:
                names += [f"{b}.ln2.hook_scale", f"{b}.ln2.hook_normalized"]
            names += [f"{b}.mlp.hook_pre", f"{b}.mlp.hook_post", f"{b}.hook_mlp_out"]
        names.append(f"{b}.hook_resid_post")
    if ln:
        names += ["ln_final.hook_scale", "ln_final.hook_normalized"]
    return names


# ------------------------------------------------------------------------------- forward


def _norm(p: Params | None, x: Array, cfg: ToyConfig, hook: Hook, prefix: str) -> Array:
    if cfg.normalization is None:
        return x
    if p is None:
        raise KeyError(f"{prefix}: the config asks for {cfg.normalization} but params have none")
    return nn.layer_norm(x, p["w"], p["b"], cfg.eps, hook, prefix)


def _attention(a: Params, x: Array, mask: Array, cfg: ToyConfig, hook: Hook, l: int) -> Array:
    prefix = f"blocks.{l}.attn"
    q = hook(f"{prefix}.hook_q", nn.head_proj(x, a["W_Q"], a["b_Q"]))
    k = hook(f"{prefix}.hook_k", nn.head_proj(x, a["W_K"], a["b_K"]))
    v = hook(f"{prefix}.hook_v", nn.head_proj(x, a["W_V"], a["b_V"]))
    z = nn.attend(q, k, v, mask, hook, prefix, scale=cfg.d_head**-0.5)
    return nn.attn_output(z, a["W_O"], a["b_O"], hook, prefix)


def forward(
    params: Params,
    tokens: Array,
    cfg: ToyConfig,
    *,
    hook: Hook = NULL_HOOK,
    attention_mask: Array | None = None,
) -> Array:
    """Logits [batch, pos, d_vocab] for integer tokens [batch, pos].

    Args:
      params: from `init` (or any pytree with the same names and shapes).
      tokens: [batch, pos] integers, pos <= n_ctx.
      cfg: the model's `ToyConfig`.
      hook: called as `x = hook(site, x)` at every site (see `site_names`).
      attention_mask: optional [batch, pos] bool, True for real tokens; positions are
        counted over real tokens so left padding does not shift them.
    """
    if tokens.ndim != 2:
        raise InputError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
    if tokens.shape[1] > cfg.n_ctx:
        raise InputError(f"{tokens.shape[1]} positions exceed n_ctx={cfg.n_ctx}")
    positions = nn.positions_from_mask(attention_mask, tokens.shape)
    mask = nn.attention_mask(positions, positions, attention_mask, None)
    embed = hook("hook_embed", nn.embed(params["embed"]["W_E"], tokens))
    pos_embed = hook("hook_pos_embed", params["pos_embed"]["W_pos"][positions])
    resid = embed + pos_embed
    for l, p in enumerate(params["blocks"]):
        b = f"blocks.{l}"
        resid = hook(f"{b}.hook_resid_pre", resid)
        x = _norm(p.get("ln1"), resid, cfg, hook, f"{b}.ln1")
        attn_out = hook(f"{b}.hook_attn_out", _attention(p["attn"], x, mask, cfg, hook, l))
        resid = resid + attn_out
        if not cfg.attn_only:
            resid = hook(f"{b}.hook_resid_mid", resid)
            x = _norm(p.get("ln2"), resid, cfg, hook, f"{b}.ln2")
            m = p["mlp"]
            pre = hook(f"{b}.mlp.hook_pre", x @ m["W_in"] + m["b_in"])
            post = hook(f"{b}.mlp.hook_post", ACTIVATIONS[cfg.act_fn](pre))
            resid = resid + hook(f"{b}.hook_mlp_out", post @ m["W_out"] + m["b_out"])
        resid = hook(f"{b}.hook_resid_post", resid)
    x = _norm(params.get("ln_final"), resid, cfg, hook, "ln_final")
    return x @ params["unembed"]["W_U"] + params["unembed"]["b_U"]
