"""Mixtral-style sparse mixture of experts as a pure function (Jiang et al. 2024,
"Mixtral of Experts"; the sparsely gated MoE layer of Shazeer et al. 2017).

Architectural features, each with its source:
- a Llama/Mistral block (`models/llama.py`): pre-norm RMSNorm, RoPE, grouped-query
  attention, optional sliding-window attention (Mistral; Jiang et al. 2023);
- the MLP replaced by `n_experts` SwiGLU experts and a linear router: each token's
  router logits (`mlp.hook_router_logits`, [batch, pos, n_experts]) go through a softmax
  in float32 (`mlp.hook_expert_weights`, TransformerLens's name), the `top_k` largest are
  kept and renormalised to sum to 1, and the token's MLP output is the sum of its chosen
  experts' outputs times those weights;
- sites per expert, at TransformerLens's places for its MoE experts:
  `mlp.experts.{e}.hook_pre` (gate), `hook_pre_linear` (up), `hook_post`, and each
  expert's weighted contribution `mlp.hook_expert_out` [batch, pos, n_experts, d_model]
  (zero where a token did not route to the expert; summed over experts it is
  `hook_mlp_out`), computed only when a hook asks for them.

Computation is dense: every expert runs on every token and the unrouted ones are
weighted by 0. The numbers are those of sparse dispatch (HF's loop over experts), at
`n_experts / top_k` times the MLP's FLOPs; in exchange the program has static shapes, so
`jit`, `vmap` and `grad` apply as to any other family, and a patched router that changes
the selection needs no recompile.

Reference: HF transformers `MixtralForCausalLM`; tests check max |logit diff| <= 1e-4
(float32, tiny random configs).

Weights: the router `W_router [d_model, n_experts]` and, stacked over experts,
`experts.W_gate, experts.W_in [n_experts, d_model, d_mlp]`,
`experts.W_out [n_experts, d_mlp, d_model]`. HF's fused `experts.gate_up_proj`
(transformers >= 5) and the checkpoints' `block_sparse_moe.experts.{e}.w1/w3/w2` both load.
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

from . import llama

Array = jax.Array
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config(llama.Config):
    """`llama.Config` plus the experts: `n_experts` SwiGLU MLPs of width `d_mlp`, `top_k`
    of them per token."""

    n_experts: int = 8
    top_k: int = 2
    model_type: str = "mixtral"

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k={self.top_k} must be in [1, n_experts={self.n_experts}]")


HF_TYPES = ("mixtral",)


def config_from_hf(hf: dict) -> Config:
    """Config from an HF `MixtralConfig` dict."""
    mt = hf.get("model_type", "mixtral")
    if mt not in HF_TYPES:
        raise CheckpointError(f"model_type {mt!r} is not a Mixtral type {HF_TYPES}")
    return Config(
        **{**llama.hf_fields(hf), "model_type": mt},
        sliding_window=hf.get("sliding_window"),
        n_experts=int(hf["num_local_experts"]),
        top_k=int(hf["num_experts_per_tok"]),
    )


# ------------------------------------------------------------------------------ sites


def mlp_sites(cfg: Config, l: int) -> list[str]:
    """The sites of layer `l`'s experts, in the order the forward visits them."""
    b = f"blocks.{l}.mlp"
    experts = [
        f"{b}.experts.{e}.{kind}"
        for kind in ("hook_pre", "hook_pre_linear", "hook_post")
        for e in range(cfg.n_experts)
    ]
    return [f"{b}.hook_router_logits", f"{b}.hook_expert_weights", *experts, f"{b}.hook_expert_out"]


def site_names(cfg: Config) -> list[str]:
    """Every site of the forward, in forward order: Llama's, with each dense MLP's
    `hook_pre/pre_linear/post` replaced by the router and expert sites."""
    names = []
    for s in llama.site_names(cfg):
        layer, _, rest = s.removeprefix("blocks.").partition(".")
        if rest == "mlp.hook_pre":
            names += mlp_sites(cfg, int(layer))
        elif rest not in ("mlp.hook_pre_linear", "mlp.hook_post"):
            names.append(s)
    return names


# ---------------------------------------------------------------------------- forward


def _top_k_renormalised(probs: Array, top_k: int) -> Array:
    """[..., n_experts]: the `top_k` largest probabilities renormalised to sum to 1, zero
    elsewhere."""
    top, idx = jax.lax.top_k(probs, top_k)
    top = top / top.sum(-1, keepdims=True)
    onehot = jax.nn.one_hot(idx, probs.shape[-1], dtype=probs.dtype)  # [..., k, E]
    return jnp.einsum("...k,...ke->...e", top, onehot)


def _per_expert(hook: Hook, names: list[str], x: Array) -> Array:
    """x [batch, pos, n_experts, ...] through the per-expert sites `names`, if asked."""
    if not any(hook.wants(n) for n in names):
        return x
    return jnp.stack([hook(n, x[:, :, e]) for e, n in enumerate(names)], axis=2)


def _moe(p: Params, x: Array, cfg: Config, hook: Hook, l: int) -> Array:
    b = f"blocks.{l}.mlp"
    m, ex = p["mlp"], p["mlp"]["experts"]
    E = range(cfg.n_experts)
    logits = hook(f"{b}.hook_router_logits", x @ m["W_router"] + m.get("b_router", 0.0))
    wide = jnp.promote_types(logits.dtype, jnp.float32)
    probs = hook(f"{b}.hook_expert_weights", jax.nn.softmax(logits.astype(wide), -1))
    weights = _top_k_renormalised(probs, cfg.top_k).astype(x.dtype)  # [b, p, E]
    pre = jnp.einsum("bpd,edm->bpem", x, ex["W_gate"]) + ex.get("b_gate", 0.0)
    pre = _per_expert(hook, [f"{b}.experts.{e}.hook_pre" for e in E], pre)
    lin = jnp.einsum("bpd,edm->bpem", x, ex["W_in"]) + ex.get("b_in", 0.0)
    lin = _per_expert(hook, [f"{b}.experts.{e}.hook_pre_linear" for e in E], lin)
    post = llama.ACTIVATIONS[cfg.act](pre) * lin
    post = _per_expert(hook, [f"{b}.experts.{e}.hook_post" for e in E], post)
    bias = ex.get("b_out")
    site = f"{b}.hook_expert_out"
    if hook.wants(site):
        out = jnp.einsum("bpem,emd->bped", post, ex["W_out"])
        if bias is not None:
            out = out + bias
        return hook(site, out * weights[..., None]).sum(2)
    out = jnp.einsum("bpem,emd->bpd", post * weights[..., None], ex["W_out"])
    return out if bias is None else out + weights @ bias


SUBLAYERS = llama.Sublayers(llama.SUBLAYERS.attention, _moe)


# forward(params, tokens, cfg, *, hook, attention_mask) and decode(..., cache, ...), as Llama's
forward, decode = llama.forward_and_decode(
    functools.partial(llama._transformer, sublayers=SUBLAYERS)
)


# ------------------------------------------------------------------------ conversion


def _experts_from_hf(tensors: dict[str, np.ndarray], get, cfg: Config, l: int) -> Params:
    pre = f"model.layers.{l}"
    fused = f"{pre}.mlp.experts.gate_up_proj"
    if fused in tensors:  # transformers >= 5: [E, 2 * d_mlp, d_model], gate rows first
        gate_up = get(fused)
        gate, up = gate_up[:, : cfg.d_mlp], gate_up[:, cfg.d_mlp :]
        down = get(f"{pre}.mlp.experts.down_proj")  # [E, d_model, d_mlp]
    else:  # the checkpoints' layout: one w1 (gate), w3 (up), w2 (down) per expert
        e = f"{pre}.block_sparse_moe.experts"
        gate = np.stack([get(f"{e}.{i}.w1.weight") for i in range(cfg.n_experts)])
        up = np.stack([get(f"{e}.{i}.w3.weight") for i in range(cfg.n_experts)])
        down = np.stack([get(f"{e}.{i}.w2.weight") for i in range(cfg.n_experts)])
    return {
        "W_gate": gate.transpose(0, 2, 1),
        "W_in": up.transpose(0, 2, 1),
        "W_out": down.transpose(0, 2, 1),
    }


def params_from_hf(tensors: dict[str, np.ndarray], cfg: Config, dtype=jnp.float32) -> Params:
    """TransformerLens-named params from HF Mixtral tensors: Llama's attention and norms,
    the router `mlp.gate` (or `block_sparse_moe.gate`) as `W_router`, the experts stacked."""
    get = llama.tensor_getter(tensors, cfg)
    blocks = []
    for l in range(cfg.n_layers):
        pre = f"model.layers.{l}"
        router = f"{pre}.mlp.gate.weight"
        if router not in tensors:
            router = f"{pre}.block_sparse_moe.gate.weight"
        blocks.append(
            {
                "ln1": {"w": get(f"{pre}.input_layernorm.weight")},
                "attn": llama.attn_from_hf(get, cfg, l),
                "ln2": {"w": get(f"{pre}.post_attention_layernorm.weight")},
                "mlp": {
                    "W_router": get(router).T,
                    "experts": _experts_from_hf(tensors, get, cfg, l),
                },
            }
        )
    return llama.assemble(get, tensors, cfg, blocks, param_shapes(cfg), dtype)


def param_shapes(cfg: Config) -> Params:
    """The expected shape of every parameter, as a pytree of tuples."""
    shapes = llama.param_shapes(cfg)
    d, m, E = cfg.d_model, cfg.d_mlp, cfg.n_experts
    mlp = {
        "W_router": (d, E),
        "experts": {"W_gate": (E, d, m), "W_in": (E, d, m), "W_out": (E, m, d)},
    }
    blocks = [{**b, "mlp": mlp} for b in shapes["blocks"]]
    return {**shapes, "blocks": blocks}


def init(key: Array, cfg: Config, scale: float = 0.02, dtype=jnp.float32) -> Params:
    """Random params (normal, std `scale`; norm gains near 1), for tests and training studies."""
    params = nn.init_from_shapes(key, param_shapes(cfg), scale, dtype)
    if cfg.tie_embeddings:
        params["unembed"]["W_U"] = params["embed"]["W_E"].T
    return params
