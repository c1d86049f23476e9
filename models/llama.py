"""Llama family as a pure function: Llama 2/3, SmolLM2, Mistral, Qwen2.

Architectural features, each with its source:
- pre-norm RMSNorm (Zhang & Sennrich 2019), SwiGLU MLP (Shazeer 2020);
- rotary position embeddings, RoPE (Su et al. 2021), with the theta and `rope_scaling`
  (linear, llama3) of the config;
- grouped-query attention, GQA (Ainslie et al. 2023): query head h reads kv head
  h // (n_heads / n_kv_heads);
- optional q/k/v biases (Qwen2), sliding-window attention (Mistral; Jiang et al. 2023),
  tied or untied embeddings;
- incremental decoding with a KV cache (`decode`, `mechjax.kv_cache`), with every site
  firing at every step so interventions apply during generation.

Reference: HF transformers `LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`;
tests check max |logit diff| <= 1e-4 (float32, tiny random configs) and <= 1e-3 on
SmolLM2-135M's real (dequantized Q4_1) weights.

Weights use TransformerLens names and shapes: `W_Q [n_heads, d_model, d_head]`,
`W_K, W_V [n_kv_heads, d_model, d_head]`, `W_O [n_heads, d_head, d_model]`,
`W_gate, W_in [d_model, d_mlp]`, `W_out [d_mlp, d_model]`, `W_E [d_vocab, d_model]`,
`W_U [d_model, d_vocab]` (stored even when tied, as TransformerLens does).
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
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
}


@dataclasses.dataclass(frozen=True)
class Config:
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int = 2048
    eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: tuple | None = None  # sorted items of HF's rope_scaling dict
    tie_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    act: str = "silu"
    model_type: str = "llama"

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if self.act not in ACTIVATIONS:
            raise ValueError(f"activation {self.act!r}; supported: {sorted(ACTIVATIONS)}")


HF_TYPES = ("llama", "mistral", "qwen2")


def config_from_hf(hf: dict) -> Config:
    """Config from an HF `config.json` dict (llama, mistral, qwen2)."""
    mt = hf.get("model_type", "llama")
    if mt not in HF_TYPES:
        raise CheckpointError(f"model_type {mt!r} is not a Llama-family type {HF_TYPES}")
    n_heads = hf["num_attention_heads"]
    d_model = hf["hidden_size"]
    scaling = hf.get("rope_scaling") or None
    theta = hf.get("rope_theta")
    params = hf.get("rope_parameters") or {}  # transformers >= 5 moves theta here
    if theta is None:
        theta = params.get("rope_theta", 10000.0)
    if scaling is None and params.get("rope_type", "default") != "default":
        scaling = params
    if scaling and scaling.get("rope_type", scaling.get("type")) == "default":
        scaling = None
    window = hf.get("sliding_window") if mt == "mistral" else None
    if mt == "qwen2" and hf.get("use_sliding_window"):
        raise CheckpointError("Qwen2 with use_sliding_window=True is not supported")
    return Config(
        d_model=d_model,
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        d_head=hf.get("head_dim") or d_model // n_heads,
        d_mlp=hf["intermediate_size"],
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 2048),
        eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta),
        rope_scaling=None
        if not scaling
        else tuple(sorted((k, v) for k, v in scaling.items() if not isinstance(v, (list, dict)))),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=mt == "qwen2" or bool(hf.get("attention_bias", False)),
        o_bias=bool(hf.get("attention_bias", False)) and mt == "llama",
        mlp_bias=bool(hf.get("mlp_bias", False)),
        sliding_window=window,
        act=hf.get("hidden_act", "silu"),
        model_type=mt,
    )


# ------------------------------------------------------------------------------ sites


def site_names(cfg: Config) -> list[str]:
    """Every site of the forward, in the order the forward visits them."""
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
            f"{b}.hook_resid_mid",
            f"{b}.hook_mlp_in",
            f"{b}.ln2.hook_scale",
            f"{b}.ln2.hook_normalized",
            f"{b}.mlp.hook_pre",
            f"{b}.mlp.hook_pre_linear",
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
    cache: KVCache | None = None,
    start: Any = None,
):
    b = f"blocks.{l}"
    a = p["attn"]
    split = any(hook.wants(f"{b}.hook_{s}_input") for s in "qkv")
    if split:
        # EAP's split inputs: each head reads its own copy of the residual stream and
        # normalises it itself, so an edge into head h's q/k/v can be patched alone.
        def head_input(s, n):
            x = jnp.broadcast_to(resid[:, :, None, :], resid.shape[:2] + (n, cfg.d_model))
            x = hook(f"{b}.hook_{s}_input", x)
            return nn.rms_norm(x, p["ln1"]["w"], cfg.eps, NULL_HOOK, "")

        q_in, k_in = head_input("q", cfg.n_heads), head_input("k", cfg.n_kv_heads)
        v_in = head_input("v", cfg.n_kv_heads)
    else:
        q_in = k_in = v_in = nn.rms_norm(resid, p["ln1"]["w"], cfg.eps, hook, f"{b}.ln1")
    q = hook(f"{b}.attn.hook_q", _proj(q_in, a["W_Q"], a.get("b_Q")))
    k = hook(f"{b}.attn.hook_k", _proj(k_in, a["W_K"], a.get("b_K")))
    v = hook(f"{b}.attn.hook_v", _proj(v_in, a["W_V"], a.get("b_V")))
    inv_freq = nn.rope_inv_freq(cfg.d_head, cfg.rope_theta, dict(cfg.rope_scaling or ()))
    q = hook(f"{b}.attn.hook_rot_q", nn.apply_rope(q, positions, inv_freq))
    k = hook(f"{b}.attn.hook_rot_k", nn.apply_rope(k, positions, inv_freq))
    if cache is not None:  # decoding: attend over every cached token plus the new ones
        k, v, cache = kv_cache.write(cache, l, k, v, start)
    z = nn.attend(q, k, v, mask, hook, f"{b}.attn", scale=cfg.d_head**-0.5)
    return nn.attn_output(z, a["W_O"], a.get("b_O"), hook, f"{b}.attn"), cache


def _mlp(p: Params, x: Array, cfg: Config, hook: Hook, l: int) -> Array:
    b = f"blocks.{l}"
    m = p["mlp"]
    pre = hook(f"{b}.mlp.hook_pre", x @ m["W_gate"] + m.get("b_gate", 0.0))
    lin = hook(f"{b}.mlp.hook_pre_linear", x @ m["W_in"] + m.get("b_in", 0.0))
    post = hook(f"{b}.mlp.hook_post", ACTIVATIONS[cfg.act](pre) * lin)
    return post @ m["W_out"] + m.get("b_out", 0.0)


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
    position ids count real tokens only, so a padded prompt gives the logits it gives
    alone.
    """
    positions = nn.positions_from_mask(attention_mask, tokens.shape)
    mask = nn.attention_mask(positions, positions, attention_mask, cfg.sliding_window)
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

    The same sites fire as in `forward`, with the new tokens' positions on the `pos` axis
    (`attn_scores`/`pattern` are `[batch, n_heads, n_new, max_len]` over the cache slots),
    so interventions apply during generation. A prompt is one call with a fresh cache
    (`kv_cache.init`); each generated token is one more call with `n_new = 1`.
    `attention_mask` marks the real tokens among the new ones (left padding of a prompt).
    With `last_only`, logits are computed for the last new token only ([batch, 1, d_vocab]).
    """
    positions, cache, start = kv_cache.begin(cache, attention_mask, tokens.shape[1])
    mask = nn.attention_mask(positions, cache.positions, cache.valid, cfg.sliding_window)
    logits, cache = _transformer(
        params, tokens, cfg, hook, positions, mask, cache, start, last_only
    )
    return DecodeOutput(logits, cache)


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
        resid = hook(f"{b}.hook_resid_mid", resid + attn_out)
        mlp_in = hook(f"{b}.hook_mlp_in", resid) if hook.wants(f"{b}.hook_mlp_in") else resid
        x = nn.rms_norm(mlp_in, p["ln2"]["w"], cfg.eps, hook, f"{b}.ln2")
        mlp_out = hook(f"{b}.hook_mlp_out", _mlp(p, x, cfg, hook, l))
        resid = hook(f"{b}.hook_resid_post", resid + mlp_out)
    x = nn.rms_norm(resid, params["ln_final"]["w"], cfg.eps, hook, "ln_final")
    if last_only:
        x = x[:, -1:]
    logits = nn.unembed(x, params["unembed"])
    return logits, cache


# ------------------------------------------------------------------------ conversion


def params_from_hf(tensors: dict[str, np.ndarray], cfg: Config, dtype=jnp.float32) -> Params:
    """TransformerLens-named params from HF-named tensors (`model.layers.0.self_attn...`)."""

    def get(name):
        if name not in tensors:
            raise CheckpointError(f"checkpoint has no tensor {name!r} (needed by {cfg.model_type})")
        return np.asarray(tensors[name], np.float32)

    def heads_in(w, n):  # HF [n*d_head, d_model] -> [n, d_model, d_head]
        return w.reshape(n, cfg.d_head, cfg.d_model).transpose(0, 2, 1)

    blocks = []
    for l in range(cfg.n_layers):
        pre = f"model.layers.{l}"
        attn = {
            "W_Q": heads_in(get(f"{pre}.self_attn.q_proj.weight"), cfg.n_heads),
            "W_K": heads_in(get(f"{pre}.self_attn.k_proj.weight"), cfg.n_kv_heads),
            "W_V": heads_in(get(f"{pre}.self_attn.v_proj.weight"), cfg.n_kv_heads),
            "W_O": get(f"{pre}.self_attn.o_proj.weight").T.reshape(
                cfg.n_heads, cfg.d_head, cfg.d_model
            ),
        }
        if cfg.qkv_bias:
            attn["b_Q"] = get(f"{pre}.self_attn.q_proj.bias").reshape(cfg.n_heads, cfg.d_head)
            attn["b_K"] = get(f"{pre}.self_attn.k_proj.bias").reshape(cfg.n_kv_heads, cfg.d_head)
            attn["b_V"] = get(f"{pre}.self_attn.v_proj.bias").reshape(cfg.n_kv_heads, cfg.d_head)
        if cfg.o_bias:
            attn["b_O"] = get(f"{pre}.self_attn.o_proj.bias")
        mlp = {
            "W_gate": get(f"{pre}.mlp.gate_proj.weight").T,
            "W_in": get(f"{pre}.mlp.up_proj.weight").T,
            "W_out": get(f"{pre}.mlp.down_proj.weight").T,
        }
        if cfg.mlp_bias:
            mlp.update(
                b_gate=get(f"{pre}.mlp.gate_proj.bias"),
                b_in=get(f"{pre}.mlp.up_proj.bias"),
                b_out=get(f"{pre}.mlp.down_proj.bias"),
            )
        blocks.append(
            {
                "ln1": {"w": get(f"{pre}.input_layernorm.weight")},
                "attn": attn,
                "ln2": {"w": get(f"{pre}.post_attention_layernorm.weight")},
                "mlp": mlp,
            }
        )
    W_E = get("model.embed_tokens.weight")
    if cfg.tie_embeddings or "lm_head.weight" not in tensors:
        W_U = W_E.T
    else:
        W_U = get("lm_head.weight").T
    params = {
        "embed": {"W_E": W_E},
        "blocks": blocks,
        "ln_final": {"w": get("model.norm.weight")},
        "unembed": {"W_U": np.ascontiguousarray(W_U)},
    }
    nn.check_param_shapes(params, param_shapes(cfg))
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def param_shapes(cfg: Config) -> Params:
    """The expected shape of every parameter, as a pytree of tuples."""
    d, h, kv, dh, m = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp
    attn: dict[str, tuple[int, ...]] = {
        "W_Q": (h, d, dh),
        "W_K": (kv, d, dh),
        "W_V": (kv, d, dh),
        "W_O": (h, dh, d),
    }
    if cfg.qkv_bias:
        attn.update(b_Q=(h, dh), b_K=(kv, dh), b_V=(kv, dh))
    if cfg.o_bias:
        attn["b_O"] = (d,)
    mlp: dict[str, tuple[int, ...]] = {"W_gate": (d, m), "W_in": (d, m), "W_out": (m, d)}
    if cfg.mlp_bias:
        mlp.update(b_gate=(m,), b_in=(m,), b_out=(d,))
    block = {"ln1": {"w": (d,)}, "attn": attn, "ln2": {"w": (d,)}, "mlp": mlp}
    return {
        "embed": {"W_E": (cfg.d_vocab, d)},
        "blocks": [block] * cfg.n_layers,
        "ln_final": {"w": (d,)},
        "unembed": {"W_U": (d, cfg.d_vocab)},
    }


def init(key: Array, cfg: Config, scale: float = 0.02, dtype=jnp.float32) -> Params:
    """Random params (normal, std `scale`; norm gains near 1), for tests and training studies."""
    params = nn.init_from_shapes(key, param_shapes(cfg), scale, dtype)
    if cfg.tie_embeddings:
        params["unembed"]["W_U"] = params["embed"]["W_E"].T
    return params
