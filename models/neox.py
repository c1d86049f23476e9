"""GPT-NeoX family as a pure function: GPT-NeoX-20B, Pythia (Black et al. 2022, "GPT-NeoX-20B:
An Open-Source Autoregressive Language Model"; Biderman et al. 2023, "Pythia").

Architectural features, each with its source:
- parallel attention and MLP (Wang & Komatsuzaki 2021, GPT-J): with
  `use_parallel_residual`, both sublayers read the block input,
  `resid_post = resid_pre + attn(ln1(resid_pre)) + mlp(ln2(resid_pre))`, and the block has
  no `hook_resid_mid`; without it, the usual sequential pre-norm block;
- partial rotary embeddings (Su et al. 2021, RoPE): only the first
  `rotary_dim = int(d_head * rotary_pct)` dimensions of each q/k head rotate
  (rotate-half layout);
- LayerNorm (Ba et al. 2016) before each sublayer and at the end, biases on q/k/v, the
  output, the MLP and (opt.) none of them (`attention_bias`); a non-gated GELU MLP;
- untied unembedding (`embed_out`, `lm_head` in transformers >= 5);
- incremental decoding with a KV cache (`decode`), as in `models/llama.py`.

Reference: HF transformers `GPTNeoXForCausalLM`; tests check max |logit diff| <= 1e-4
(float32, tiny random configs, parallel and sequential residual).

Weights use TransformerLens names and shapes. HF's fused `query_key_value` [3 * d_model,
d_model] is laid out per head as (q, k, v) blocks of `d_head` rows; it is split on load
into `W_Q, W_K, W_V [n_heads, d_model, d_head]`, `b_Q, b_K, b_V [n_heads, d_head]`, with
`W_O [n_heads, d_head, d_model]`, `b_O`, `W_in [d_model, d_mlp]`, `b_in`,
`W_out [d_mlp, d_model]`, `b_out`, `W_E`, `W_U`; LayerNorms hold `w` and `b`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import kv_cache, nn
from mechjax.errors import CheckpointError
from mechjax.hooks import NULL_HOOK, Hook
from mechjax.kv_cache import DecodeOutput, KVCache

Array = jax.Array
Params = dict[str, Any]

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


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
    rotary_dim: int = 0  # leading dimensions of each head that rotate
    rope_theta: float = 10000.0
    parallel_residual: bool = True
    bias: bool = True  # HF's attention_bias: biases on q/k/v and the attention output
    act: str = "gelu"
    tie_embeddings: bool = False
    model_type: str = "gpt_neox"

    def __post_init__(self):
        if self.act not in ACTIVATIONS:
            raise ValueError(f"activation {self.act!r}; supported: {sorted(ACTIVATIONS)}")
        if self.rotary_dim % 2 or not 0 <= self.rotary_dim <= self.d_head:
            raise ValueError(f"rotary_dim={self.rotary_dim} must be even and in [0, d_head]")

    @property
    def n_kv_heads(self) -> int:
        """One key/value head per query head (kept for family-generic code, the KV cache)."""
        return self.n_heads


def config_from_hf(hf: dict) -> Config:
    """Config from an HF GPT-NeoX `config.json` dict (old `rotary_pct` keys or new
    `rope_parameters`)."""
    mt = hf.get("model_type", "gpt_neox")
    if mt != "gpt_neox":
        raise CheckpointError(f"model_type {mt!r} is not 'gpt_neox'")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise CheckpointError(f"GPT-NeoX rope type {rope.get('rope_type')!r} is not supported")
    d_model, n_heads = hf["hidden_size"], hf["num_attention_heads"]
    d_head = d_model // n_heads
    pct = rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25))
    theta = rope.get("rope_theta", hf.get("rotary_emb_base", 10000.0))
    return Config(
        d_model=d_model,
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        d_head=d_head,
        d_mlp=hf["intermediate_size"],
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 2048),
        eps=hf.get("layer_norm_eps", 1e-5),
        rotary_dim=int(d_head * pct),
        rope_theta=float(theta),
        parallel_residual=bool(hf.get("use_parallel_residual", True)),
        bias=bool(hf.get("attention_bias", True)),
        act=hf.get("hidden_act", "gelu"),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


# ------------------------------------------------------------------------------ sites


def site_names(cfg: Config) -> list[str]:
    """Every site of the forward, in the order the forward visits them.

    A parallel block has no `hook_resid_mid` (TransformerLens's `parallel_attn_mlp`).
    """
    names = ["hook_embed"]
    for l in range(cfg.n_layers):
        b = f"blocks.{l}"
        names += [
            f"{b}.hook_resid_pre",
            f"{b}.ln1.hook_scale",
            f"{b}.ln1.hook_normalized",
            f"{b}.hook_q_input",
            f"{b}.hook_k_input",
            f"{b}.hook_v_input",
            f"{b}.attn.hook_q",
            f"{b}.attn.hook_k",
            f"{b}.attn.hook_v",
            f"{b}.attn.hook_rot_q",
            f"{b}.attn.hook_rot_k",
            f"{b}.attn.hook_attn_scores",
            f"{b}.attn.hook_pattern",
            f"{b}.attn.hook_z",
            f"{b}.attn.hook_result",
            f"{b}.hook_attn_out",
        ]
        if not cfg.parallel_residual:
            names.append(f"{b}.hook_resid_mid")
        names += [
            f"{b}.hook_mlp_in",
            f"{b}.ln2.hook_scale",
            f"{b}.ln2.hook_normalized",
            f"{b}.mlp.hook_pre",
            f"{b}.mlp.hook_post",
            f"{b}.hook_mlp_out",
            f"{b}.hook_resid_post",
        ]
    return names + ["ln_final.hook_scale", "ln_final.hook_normalized"]


# ---------------------------------------------------------------------------- forward


def _proj(x, W, b):
    return nn.head_proj(x, W, b)


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
        # EAP's split inputs: each head reads its own copy of the residual stream and
        # normalises it itself, so an edge into head h's q, k or v can be patched alone.
        def head_input(s):
            x = jnp.broadcast_to(resid[:, :, None, :], resid.shape[:2] + (cfg.n_heads, cfg.d_model))
            x = hook(f"{b}.hook_{s}_input", x)
            return nn.layer_norm(x, ln["w"], ln["b"], cfg.eps, NULL_HOOK, "")

        q_in, k_in, v_in = head_input("q"), head_input("k"), head_input("v")
    else:
        q_in = k_in = v_in = nn.layer_norm(resid, ln["w"], ln["b"], cfg.eps, hook, f"{b}.ln1")
    q = hook(f"{b}.attn.hook_q", _proj(q_in, a["W_Q"], a.get("b_Q")))
    k = hook(f"{b}.attn.hook_k", _proj(k_in, a["W_K"], a.get("b_K")))
    v = hook(f"{b}.attn.hook_v", _proj(v_in, a["W_V"], a.get("b_V")))
    inv_freq = nn.rope_inv_freq(cfg.rotary_dim, cfg.rope_theta)
    q = hook(f"{b}.attn.hook_rot_q", nn.apply_rope(q, positions, inv_freq))
    k = hook(f"{b}.attn.hook_rot_k", nn.apply_rope(k, positions, inv_freq))
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
    post = hook(f"{b}.mlp.hook_post", ACTIVATIONS[cfg.act](pre))
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
        if cfg.parallel_residual:
            mlp_out = _mlp(p, resid, cfg, hook, l)
            resid = resid + attn_out + mlp_out
        else:
            resid = hook(f"{b}.hook_resid_mid", resid + attn_out)
            resid = resid + _mlp(p, resid, cfg, hook, l)
        resid = hook(f"{b}.hook_resid_post", resid)
    ln = params["ln_final"]
    x = nn.layer_norm(resid, ln["w"], ln["b"], cfg.eps, hook, "ln_final")
    if last_only:
        x = x[:, -1:]
    logits = nn.unembed(x, params["unembed"])
    return logits, cache


def forward(
    params: Params,
    tokens: Array,
    cfg: Config,
    *,
    hook: Hook = NULL_HOOK,
    attention_mask: Array | None = None,
) -> Array:
    """Logits [batch, pos, d_vocab] for tokens [batch, pos].

    `attention_mask` [batch, pos] (True = real token) handles padding on either side:
    position ids count real tokens only.
    """
    positions = nn.positions_from_mask(attention_mask, tokens.shape)
    mask = nn.attention_mask(positions, positions, attention_mask, None)
    return _transformer(params, tokens, cfg, hook, positions, mask)[0]


def decode(
    params: Params,
    tokens: Array,
    cfg: Config,
    cache: KVCache,
    *,
    hook: Hook = NULL_HOOK,
    attention_mask: Array | None = None,
    last_only: bool = False,
) -> DecodeOutput:
    """Run new tokens [batch, n_new] against a KV cache; logits and the updated cache.

    Same contract as `mechjax.models.llama.decode`: every site fires with the new tokens
    on the `pos` axis.
    """
    positions, cache, start = kv_cache.begin(cache, attention_mask, tokens.shape[1])
    mask = nn.attention_mask(positions, cache.positions, cache.valid, None)
    logits, cache = _transformer(
        params, tokens, cfg, hook, positions, mask, cache, start, last_only
    )
    return DecodeOutput(logits, cache)


# ------------------------------------------------------------------------ conversion


def params_from_hf(tensors: dict[str, np.ndarray], cfg: Config, dtype=jnp.float32) -> Params:
    """TransformerLens-named params from HF GPT-NeoX tensors (`gpt_neox.layers.0...`)."""
    prefix = "gpt_neox." if "gpt_neox.embed_in.weight" in tensors else ""

    def get(name, full=False):
        key = name if full else prefix + name
        if key not in tensors:
            raise CheckpointError(f"checkpoint has no tensor {key!r} (needed by gpt_neox)")
        return np.asarray(tensors[key], np.float32)

    h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
    blocks = []
    for l in range(cfg.n_layers):
        pre = f"layers.{l}"
        # rows of query_key_value: head-major, then (q, k, v), then d_head
        qkv = get(f"{pre}.attention.query_key_value.weight").reshape(h, 3, dh, d)
        W_Q, W_K, W_V = (qkv[:, i].transpose(0, 2, 1) for i in range(3))
        attn = {
            "W_Q": W_Q,
            "W_K": W_K,
            "W_V": W_V,
            "W_O": get(f"{pre}.attention.dense.weight").T.reshape(h, dh, d),
        }
        if cfg.bias:
            b_qkv = get(f"{pre}.attention.query_key_value.bias").reshape(h, 3, dh)
            attn.update(
                b_Q=b_qkv[:, 0],
                b_K=b_qkv[:, 1],
                b_V=b_qkv[:, 2],
                b_O=get(f"{pre}.attention.dense.bias"),
            )
        blocks.append(
            {
                "ln1": {
                    "w": get(f"{pre}.input_layernorm.weight"),
                    "b": get(f"{pre}.input_layernorm.bias"),
                },
                "attn": attn,
                "ln2": {
                    "w": get(f"{pre}.post_attention_layernorm.weight"),
                    "b": get(f"{pre}.post_attention_layernorm.bias"),
                },
                "mlp": {
                    "W_in": get(f"{pre}.mlp.dense_h_to_4h.weight").T,
                    "b_in": get(f"{pre}.mlp.dense_h_to_4h.bias"),
                    "W_out": get(f"{pre}.mlp.dense_4h_to_h.weight").T,
                    "b_out": get(f"{pre}.mlp.dense_4h_to_h.bias"),
                },
            }
        )
    W_E = get("embed_in.weight")
    # Pythia's checkpoints call the unembedding `embed_out`; transformers >= 5 `lm_head`.
    head = next((k for k in ("embed_out.weight", "lm_head.weight") if k in tensors), None)
    if cfg.tie_embeddings or head is None:
        W_U = W_E.T
    else:
        W_U = get(head, full=True).T
    params = {
        "embed": {"W_E": W_E},
        "blocks": blocks,
        "ln_final": {"w": get("final_layer_norm.weight"), "b": get("final_layer_norm.bias")},
        "unembed": {"W_U": np.ascontiguousarray(W_U)},
    }
    nn.check_param_shapes(params, param_shapes(cfg))
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def param_shapes(cfg: Config) -> Params:
    """The expected shape of every parameter, as a pytree of tuples."""
    d, h, dh, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    attn: dict[str, tuple[int, ...]] = {
        "W_Q": (h, d, dh),
        "W_K": (h, d, dh),
        "W_V": (h, d, dh),
        "W_O": (h, dh, d),
    }
    if cfg.bias:
        attn.update(b_Q=(h, dh), b_K=(h, dh), b_V=(h, dh), b_O=(d,))
    mlp: dict[str, tuple[int, ...]] = {"W_in": (d, m), "b_in": (m,), "W_out": (m, d), "b_out": (d,)}
    ln = {"w": (d,), "b": (d,)}
    block = {"ln1": ln, "attn": attn, "ln2": ln, "mlp": mlp}
    return {
        "embed": {"W_E": (cfg.d_vocab, d)},
        "blocks": [block] * cfg.n_layers,
        "ln_final": ln,
        "unembed": {"W_U": (d, cfg.d_vocab)},
    }


def init(key: Array, cfg: Config, scale: float = 0.02, dtype=jnp.float32) -> Params:
    """Random params (normal, std `scale`; LayerNorm gains near 1), for tests and training."""
    params = nn.init_from_shapes(key, param_shapes(cfg), scale, dtype)
    if cfg.tie_embeddings:
        params["unembed"]["W_U"] = params["embed"]["W_E"].T
    return params
