"""GPT-J as a pure function (Wang & Komatsuzaki 2021, "GPT-J-6B: A 6 Billion Parameter
Autoregressive Language Model", mesh-transformer-jax).

Architectural features, each with its source:
- parallel attention and MLP: one LayerNorm (`ln_1`) of the block input feeds both
  sublayers, `resid_post = resid_pre + attn(ln(resid_pre)) + mlp(ln(resid_pre))`; the
  block has no `hook_resid_mid`. As TransformerLens does for GPT-J, the norm's weights
  are stored twice, as `ln1` (read by attention) and `ln2` (read by the MLP, with its own
  `hook_mlp_in` and `ln2` sites), so EAP's MLP input and weight folding work as for any
  parallel block; loading copies HF's `ln_1` into both;
- rotary embeddings on the first `rotary_dim` dimensions of each head (64 of 256 in
  GPT-J-6B) in the interleaved layout of the original code (`rotate_every_two`: pairs
  (0, 1), (2, 3), ... rotate), not GPT-NeoX's rotate-half; the sites hold q and k in
  HF's dimension order;
- LayerNorm, no biases on q/k/v/o, a GELU MLP (`gelu_new`) with biases, an untied
  unembedding with a bias (`b_U`);
- incremental decoding with a KV cache (`decode`).

Reference: HF transformers `GPTJForCausalLM`; tests check max |logit diff| <= 1e-4
(float32, tiny random configs with partial rotary).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, Int

from mechjax import kv_cache, nn
from mechjax.errors import CheckpointError
from mechjax.hooks import NULL_HOOK, Hook
from mechjax.kv_cache import KVCache

from . import llama, neox

Array = jax.Array
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int = 2048
    eps: float = 1e-5
    rotary_dim: int = 64  # leading dimensions of each head that rotate
    rope_theta: float = 10000.0
    act: str = "gelu_new"
    tie_embeddings: bool = False
    model_type: str = "gptj"

    def __post_init__(self):
        if self.act not in neox.ACTIVATIONS:
            raise ValueError(f"activation {self.act!r}; supported: {sorted(neox.ACTIVATIONS)}")
        if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.d_head:
            raise ValueError(f"rotary_dim={self.rotary_dim} must be even and in (0, d_head]")

    @property
    def n_kv_heads(self) -> int:
        """One key/value head per query head (for family-generic code, the KV cache)."""
        return self.n_heads

    @property
    def parallel_residual(self) -> bool:
        """Attention and MLP both read the block input (EAP's graph reads this)."""
        return True


HF_TYPES = ("gptj",)


def config_from_hf(hf: dict) -> Config:
    """Config from an HF `GPTJConfig` dict (`n_embd`, `n_head`, ... or their aliases)."""
    mt = hf.get("model_type", "gptj")
    if mt not in HF_TYPES:
        raise CheckpointError(f"model_type {mt!r} is not a GPT-J type {HF_TYPES}")

    def field(name: str, alias: str) -> int:
        if name not in hf and alias not in hf:
            raise CheckpointError(f"GPT-J config has neither {name!r} nor {alias!r}")
        return int(hf[name] if name in hf else hf[alias])

    d_model, n_heads = field("n_embd", "hidden_size"), field("n_head", "num_attention_heads")
    d_head = d_model // n_heads
    return Config(
        d_model=d_model,
        n_layers=field("n_layer", "num_hidden_layers"),
        n_heads=n_heads,
        d_head=d_head,
        d_mlp=hf.get("n_inner") or 4 * d_model,
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("n_positions", hf.get("max_position_embeddings", 2048)),
        eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        rotary_dim=hf.get("rotary_dim") or d_head,
        act=hf.get("activation_function", "gelu_new"),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


# ------------------------------------------------------------------------------ sites


def site_names(cfg: Config) -> list[str]:
    """Every site of the forward, in forward order (a parallel block: no `hook_resid_mid`)."""
    names = ["hook_embed"]
    for l in range(cfg.n_layers):
        b = f"blocks.{l}"
        names += [f"{b}.hook_resid_pre", f"{b}.ln1.hook_scale", f"{b}.ln1.hook_normalized"]
        names += [f"{b}.hook_{s}_input" for s in "qkv"]
        names += [f"{b}.attn.hook_{s}" for s in ("q", "k", "v", "rot_q", "rot_k")]
        names += [f"{b}.attn.hook_{s}" for s in ("attn_scores", "pattern", "z", "result")]
        names += [f"{b}.hook_attn_out", f"{b}.hook_mlp_in"]
        names += [f"{b}.ln2.hook_scale", f"{b}.ln2.hook_normalized"]
        names += [f"{b}.mlp.hook_pre", f"{b}.mlp.hook_post", f"{b}.hook_mlp_out"]
        names.append(f"{b}.hook_resid_post")
    return names + ["ln_final.hook_scale", "ln_final.hook_normalized"]


# ---------------------------------------------------------------------------- forward


def apply_rope_interleaved(
    x: Float[Array, "batch pos heads d_head"],
    positions: Int[Array, "batch pos"],
    inv_freq: Float[Array, " half_rot"],
) -> Float[Array, "batch pos heads d_head"]:
    """Rotate the first `2 * len(inv_freq)` dims of x [batch, pos, heads, d_head] in
    GPT-J's layout: dimensions (2i, 2i + 1) form pair i, rotated by angle pos * inv_freq[i]."""
    rot = 2 * inv_freq.shape[0]
    wide = jnp.promote_types(x.dtype, jnp.float32)
    angles = positions[..., None].astype(wide) * inv_freq.astype(wide)  # [batch, pos, rot/2]
    cos = jnp.repeat(jnp.cos(angles), 2, axis=-1)[:, :, None, :]
    sin = jnp.repeat(jnp.sin(angles), 2, axis=-1)[:, :, None, :]
    xr, xp = x[..., :rot], x[..., rot:]
    rotated = jnp.stack([-xr[..., 1::2], xr[..., ::2]], axis=-1).reshape(xr.shape)
    out = (xr * cos + rotated * sin).astype(x.dtype)
    return jnp.concatenate([out, xp], -1) if xp.shape[-1] else out


def _attention(
    p: Params,
    resid: Array,
    cfg: Config,
    hook: Hook,
    l: int,
    positions,
    mask,
    cache: KVCache | None,
    start,
):
    b = f"blocks.{l}"
    a, ln = p["attn"], p["ln1"]
    if any(hook.wants(f"{b}.hook_{s}_input") for s in "qkv"):
        # EAP's split inputs: each head reads and normalises its own copy of the residual.
        def head_input(s):
            x = jnp.broadcast_to(resid[:, :, None, :], resid.shape[:2] + (cfg.n_heads, cfg.d_model))
            x = hook(f"{b}.hook_{s}_input", x)
            return nn.layer_norm(x, ln["w"], ln["b"], cfg.eps, NULL_HOOK, "")

        q_in, k_in, v_in = head_input("q"), head_input("k"), head_input("v")
    else:
        q_in = k_in = v_in = nn.layer_norm(resid, ln["w"], ln["b"], cfg.eps, hook, f"{b}.ln1")
    # GPT-J has no q/k/v/o biases; folding a LayerNorm (`mechjax.weights`) adds them
    q = hook(f"{b}.attn.hook_q", nn.head_proj(q_in, a["W_Q"], a.get("b_Q")))
    k = hook(f"{b}.attn.hook_k", nn.head_proj(k_in, a["W_K"], a.get("b_K")))
    v = hook(f"{b}.attn.hook_v", nn.head_proj(v_in, a["W_V"], a.get("b_V")))
    inv_freq = nn.rope_inv_freq(cfg.rotary_dim, cfg.rope_theta)
    q = hook(f"{b}.attn.hook_rot_q", apply_rope_interleaved(q, positions, inv_freq))
    k = hook(f"{b}.attn.hook_rot_k", apply_rope_interleaved(k, positions, inv_freq))
    if cache is not None:  # decoding: attend over every cached token plus the new ones
        k, v, cache = kv_cache.write(cache, l, k, v, start)
    z = nn.attend(q, k, v, mask, hook, f"{b}.attn", scale=cfg.d_head**-0.5)
    return nn.attn_output(z, a["W_O"], a.get("b_O"), hook, f"{b}.attn"), cache


def _mlp(p: Params, resid: Array, cfg: Config, hook: Hook, l: int) -> Array:
    b = f"blocks.{l}"
    m, ln = p["mlp"], p["ln2"]
    mlp_in = hook(f"{b}.hook_mlp_in", resid) if hook.wants(f"{b}.hook_mlp_in") else resid
    x = nn.layer_norm(mlp_in, ln["w"], ln["b"], cfg.eps, hook, f"{b}.ln2")
    pre = hook(f"{b}.mlp.hook_pre", x @ m["W_in"] + m["b_in"])
    post = hook(f"{b}.mlp.hook_post", neox.ACTIVATIONS[cfg.act](pre))
    return hook(f"{b}.hook_mlp_out", post @ m["W_out"] + m["b_out"])


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
        attn_out, cache = _attention(p, resid, cfg, hook, l, positions, mask, cache, start)
        attn_out = hook(f"{b}.hook_attn_out", attn_out)
        mlp_out = _mlp(p, resid, cfg, hook, l)
        resid = hook(f"{b}.hook_resid_post", resid + attn_out + mlp_out)
    ln = params["ln_final"]
    x = nn.layer_norm(resid, ln["w"], ln["b"], cfg.eps, hook, "ln_final")
    if last_only:
        x = x[:, -1:]
    return nn.unembed(x, params["unembed"]), cache


# forward(params, tokens, cfg, *, hook, attention_mask) and decode(..., cache, ...), as Llama's
forward, decode = llama.forward_and_decode(_transformer)


# ------------------------------------------------------------------------ conversion


def params_from_hf(tensors: dict[str, np.ndarray], cfg: Config, dtype=jnp.float32) -> Params:
    """TransformerLens-named params from HF GPT-J tensors (`transformer.h.0.attn...`)."""

    def get(name):
        if name not in tensors:
            raise CheckpointError(f"checkpoint has no tensor {name!r} (needed by gptj)")
        return np.asarray(tensors[name], np.float32)

    h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head

    def heads_in(w):  # HF [h*d_head, d_model] -> [h, d_model, d_head]
        return w.reshape(h, dh, d).transpose(0, 2, 1)

    blocks = []
    for l in range(cfg.n_layers):
        pre = f"transformer.h.{l}"
        ln = {"w": get(f"{pre}.ln_1.weight"), "b": get(f"{pre}.ln_1.bias")}
        blocks.append(
            {
                "ln1": ln,
                "attn": {
                    "W_Q": heads_in(get(f"{pre}.attn.q_proj.weight")),
                    "W_K": heads_in(get(f"{pre}.attn.k_proj.weight")),
                    "W_V": heads_in(get(f"{pre}.attn.v_proj.weight")),
                    "W_O": get(f"{pre}.attn.out_proj.weight").T.reshape(h, dh, d),
                },
                "ln2": {k: v.copy() for k, v in ln.items()},
                "mlp": {
                    "W_in": get(f"{pre}.mlp.fc_in.weight").T,
                    "b_in": get(f"{pre}.mlp.fc_in.bias"),
                    "W_out": get(f"{pre}.mlp.fc_out.weight").T,
                    "b_out": get(f"{pre}.mlp.fc_out.bias"),
                },
            }
        )
    W_E = get("transformer.wte.weight")
    unembed = {"W_U": np.ascontiguousarray(W_E.T)}
    if not cfg.tie_embeddings and "lm_head.weight" in tensors:
        unembed["W_U"] = np.ascontiguousarray(get("lm_head.weight").T)
    unembed["b_U"] = (
        get("lm_head.bias") if "lm_head.bias" in tensors else np.zeros(cfg.d_vocab, np.float32)
    )
    params = {
        "embed": {"W_E": W_E},
        "blocks": blocks,
        "ln_final": {"w": get("transformer.ln_f.weight"), "b": get("transformer.ln_f.bias")},
        "unembed": unembed,
    }
    nn.check_param_shapes(params, param_shapes(cfg))
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def param_shapes(cfg: Config) -> Params:
    """The expected shape of every parameter, as a pytree of tuples."""
    d, h, dh, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    ln = {"w": (d,), "b": (d,)}
    block = {
        "ln1": ln,
        "attn": {"W_Q": (h, d, dh), "W_K": (h, d, dh), "W_V": (h, d, dh), "W_O": (h, dh, d)},
        "ln2": ln,
        "mlp": {"W_in": (d, m), "b_in": (m,), "W_out": (m, d), "b_out": (d,)},
    }
    return {
        "embed": {"W_E": (cfg.d_vocab, d)},
        "blocks": [block] * cfg.n_layers,
        "ln_final": ln,
        "unembed": {"W_U": (d, cfg.d_vocab), "b_U": (cfg.d_vocab,)},
    }


def init(key: Array, cfg: Config, scale: float = 0.02, dtype=jnp.float32) -> Params:
    """Random params (normal, std `scale`; LayerNorm gains near 1); `ln2` is a copy of
    `ln1`, as in a converted checkpoint."""
    params = nn.init_from_shapes(key, param_shapes(cfg), scale, dtype)
    for block in params["blocks"]:
        block["ln2"] = dict(block["ln1"])
    if cfg.tie_embeddings:
        params["unembed"]["W_U"] = params["embed"]["W_E"].T
    return params
