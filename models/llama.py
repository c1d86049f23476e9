"""Llama family as a pure function: Llama 2/3, SmolLM2, Mistral, Qwen2/Qwen2.5.

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

Other families build on this block: Qwen3, Phi-3 and Mixtral swap its sublayers
(`Sublayers`, `qkv`, `rotary_attention`, the converter pieces `hf_fields`,
`attn_from_hf`, `mlp_from_hf`, `assemble`); `forward_and_decode` gives any family's
`_transformer` this module's forward and KV-cache decode.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

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
    if mt == "qwen2" and hf.get("use_sliding_window"):
        raise CheckpointError("Qwen2 with use_sliding_window=True is not supported")
    return Config(
        **hf_fields(hf),
        qkv_bias=mt == "qwen2" or bool(hf.get("attention_bias", False)),
        o_bias=bool(hf.get("attention_bias", False)) and mt == "llama",
        mlp_bias=bool(hf.get("mlp_bias", False)),
        sliding_window=hf.get("sliding_window") if mt == "mistral" else None,
    )


def rope_from_hf(hf: dict) -> tuple[float, dict | None]:
    """(theta, rope_scaling dict or None) from either config layout: `rope_theta` and
    `rope_scaling` at the top (checkpoints' config.json) or transformers >= 5's
    `rope_parameters`."""
    scaling = hf.get("rope_scaling") or None
    theta = hf.get("rope_theta")
    params = hf.get("rope_parameters") or {}
    if theta is None:
        theta = params.get("rope_theta", 10000.0)
    if scaling is None and params.get("rope_type", "default") != "default":
        scaling = params
    if scaling and scaling.get("rope_type", scaling.get("type")) == "default":
        scaling = None
    return float(theta), scaling


def hf_fields(hf: dict) -> dict[str, Any]:
    """The `Config` fields every Llama-style HF config spells the same way (shapes, norm
    epsilon, RoPE, embeddings tying, activation, model_type)."""
    n_heads = hf["num_attention_heads"]
    d_model = hf["hidden_size"]
    theta, scaling = rope_from_hf(hf)
    return dict(
        d_model=d_model,
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        d_head=hf.get("head_dim") or d_model // n_heads,
        d_mlp=hf["intermediate_size"],
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 2048),
        eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=theta,
        rope_scaling=None
        if not scaling
        else tuple(sorted((k, v) for k, v in scaling.items() if not isinstance(v, (list, dict)))),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        act=hf.get("hidden_act", "silu"),
        model_type=hf.get("model_type", "llama"),
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


def qkv(p: Params, resid: Array, cfg: Any, hook: Hook, l: int) -> tuple[Array, Array, Array]:
    """q, k, v [batch, pos, heads, d_head] of block `l` (sites `attn.hook_q/k/v`), from
    `ln1` of the block input, or from EAP's split inputs when a hook asks for them."""
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
    return q, k, v


def rotary_attention(
    a: Params,
    q: Array,
    k: Array,
    v: Array,
    cfg: Any,
    hook: Hook,
    l: int,
    positions,
    mask,
    cache: KVCache | None,
    start: Any,
    rope: tuple[Array, Any],
):
    """RoPE on q and k (sites `hook_rot_q/k`), the KV cache, attention and its output.

    `rope` = (inverse frequencies, factor on the rotated dimensions or None): the first
    `2 * len(inv_freq)` dimensions of each head rotate, as `nn.apply_rope`.
    """
    b = f"blocks.{l}"
    inv_freq, factor = rope

    def rotate(x):
        x = nn.apply_rope(x, positions, inv_freq)
        if factor is None:
            return x
        r = 2 * inv_freq.shape[0]  # LongRoPE's attention factor scales cos and sin
        return jnp.concatenate([x[..., :r] * factor, x[..., r:]], -1).astype(x.dtype)

    q = hook(f"{b}.attn.hook_rot_q", rotate(q))
    k = hook(f"{b}.attn.hook_rot_k", rotate(k))
    if cache is not None:  # decoding: attend over every cached token plus the new ones
        k, v, cache = kv_cache.write(cache, l, k, v, start)
    z = nn.attend(q, k, v, mask, hook, f"{b}.attn", scale=cfg.d_head**-0.5)
    return nn.attn_output(z, a["W_O"], a.get("b_O"), hook, f"{b}.attn"), cache


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
    q, k, v = qkv(p, resid, cfg, hook, l)
    inv_freq = nn.rope_inv_freq(cfg.d_head, cfg.rope_theta, dict(cfg.rope_scaling or ()))
    return rotary_attention(
        p["attn"], q, k, v, cfg, hook, l, positions, mask, cache, start, (inv_freq, None)
    )


def _mlp(p: Params, x: Array, cfg: Config, hook: Hook, l: int) -> Array:
    b = f"blocks.{l}"
    m = p["mlp"]
    pre = hook(f"{b}.mlp.hook_pre", x @ m["W_gate"] + m.get("b_gate", 0.0))
    lin = hook(f"{b}.mlp.hook_pre_linear", x @ m["W_in"] + m.get("b_in", 0.0))
    post = hook(f"{b}.mlp.hook_post", ACTIVATIONS[cfg.act](pre) * lin)
    return post @ m["W_out"] + m.get("b_out", 0.0)


class Sublayers(NamedTuple):
    """The two sublayers of a pre-norm block, so a family that differs from Llama only
    inside them (Qwen3's QK-norm, Phi-3's rotary, Mixtral's experts) reuses the rest.

    `attention(p, resid, cfg, hook, l, positions, mask, cache, start) -> (out, cache)`
    reads the block input (it applies `ln1` itself, for EAP's split inputs);
    `mlp(p, x, cfg, hook, l) -> out` reads the `ln2`-normalised stream.
    """

    attention: Callable
    mlp: Callable


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
    sublayers: Sublayers | None = None,
):
    attention, mlp = sublayers or SUBLAYERS
    resid = hook("hook_embed", nn.embed(params["embed"]["W_E"], tokens))
    for l, p in enumerate(params["blocks"]):
        b = f"blocks.{l}"
        resid = hook(f"{b}.hook_resid_pre", resid)
        attn_out, cache = attention(p, resid, cfg, hook, l, positions, mask, cache, start)
        attn_out = hook(f"{b}.hook_attn_out", attn_out)
        resid = hook(f"{b}.hook_resid_mid", resid + attn_out)
        mlp_in = hook(f"{b}.hook_mlp_in", resid) if hook.wants(f"{b}.hook_mlp_in") else resid
        x = nn.rms_norm(mlp_in, p["ln2"]["w"], cfg.eps, hook, f"{b}.ln2")
        mlp_out = hook(f"{b}.hook_mlp_out", mlp(p, x, cfg, hook, l))
        resid = hook(f"{b}.hook_resid_post", resid + mlp_out)
    x = nn.rms_norm(resid, params["ln_final"]["w"], cfg.eps, hook, "ln_final")
    if last_only:
        x = x[:, -1:]
    logits = nn.unembed(x, params["unembed"])
    return logits, cache


SUBLAYERS = Sublayers(_attention, _mlp)


def forward_and_decode(transformer: Callable) -> tuple[Callable, Callable]:
    """A family's `forward` and `decode` from its `transformer(params, tokens, cfg, hook,
    positions, mask, cache=None, start=None, last_only=False) -> (logits, cache)`, with
    the contract of this module's: position ids from the padding mask, a causal mask
    (windowed by `cfg.sliding_window` where the config has one), the KV cache's slots.
    For a Llama block with other sublayers: `functools.partial(_transformer,
    sublayers=...)`."""

    def forward(
        params: Params,
        tokens: Array,
        cfg: Any,
        *,
        hook: Hook = NULL_HOOK,
        attention_mask: Array | None = None,
    ) -> Array:
        """Logits [batch, pos, d_vocab] for tokens [batch, pos] (`attention_mask` [batch,
        pos], True = real token: padding on either side, position ids over real tokens)."""
        positions = nn.positions_from_mask(attention_mask, tokens.shape)
        window = getattr(cfg, "sliding_window", None)
        mask = nn.attention_mask(positions, positions, attention_mask, window)
        return transformer(params, tokens, cfg, hook, positions, mask)[0]

    def decode(
        params: Params,
        tokens: Array,
        cfg: Any,
        cache: KVCache,
        *,
        hook: Hook = NULL_HOOK,
        attention_mask: Array | None = None,
        last_only: bool = False,
    ) -> DecodeOutput:
        """New tokens [batch, n_new] against a KV cache, as `models.llama.decode`."""
        positions, cache, start = kv_cache.begin(cache, attention_mask, tokens.shape[1])
        window = getattr(cfg, "sliding_window", None)
        mask = nn.attention_mask(positions, cache.positions, cache.valid, window)
        logits, cache = transformer(
            params, tokens, cfg, hook, positions, mask, cache, start, last_only
        )
        return DecodeOutput(logits, cache)

    return forward, decode


# ------------------------------------------------------------------------ conversion


def params_from_hf(tensors: dict[str, np.ndarray], cfg: Config, dtype=jnp.float32) -> Params:
    """TransformerLens-named params from HF-named tensors (`model.layers.0.self_attn...`)."""
    get = tensor_getter(tensors, cfg)
    blocks = [
        {
            "ln1": {"w": get(f"model.layers.{l}.input_layernorm.weight")},
            "attn": attn_from_hf(get, cfg, l),
            "ln2": {"w": get(f"model.layers.{l}.post_attention_layernorm.weight")},
            "mlp": mlp_from_hf(get, cfg, l),
        }
        for l in range(cfg.n_layers)
    ]
    return assemble(get, tensors, cfg, blocks, param_shapes(cfg), dtype)


def tensor_getter(tensors: dict[str, np.ndarray], cfg: Any) -> Callable[[str], np.ndarray]:
    """`get(name)`: the float32 tensor, or a `CheckpointError` naming it and the family."""

    def get(name):
        if name not in tensors:
            raise CheckpointError(f"checkpoint has no tensor {name!r} (needed by {cfg.model_type})")
        return np.asarray(tensors[name], np.float32)

    return get


def attn_from_hf(get: Callable, cfg: Any, l: int) -> Params:
    """W_Q/W_K/W_V/W_O (and biases the config has) of layer `l` from `self_attn.*_proj`."""
    pre = f"model.layers.{l}.self_attn"

    def heads_in(w, n):  # HF [n*d_head, d_model] -> [n, d_model, d_head]
        return w.reshape(n, cfg.d_head, cfg.d_model).transpose(0, 2, 1)

    attn = {
        "W_Q": heads_in(get(f"{pre}.q_proj.weight"), cfg.n_heads),
        "W_K": heads_in(get(f"{pre}.k_proj.weight"), cfg.n_kv_heads),
        "W_V": heads_in(get(f"{pre}.v_proj.weight"), cfg.n_kv_heads),
        "W_O": get(f"{pre}.o_proj.weight").T.reshape(cfg.n_heads, cfg.d_head, cfg.d_model),
    }
    if cfg.qkv_bias:
        attn["b_Q"] = get(f"{pre}.q_proj.bias").reshape(cfg.n_heads, cfg.d_head)
        attn["b_K"] = get(f"{pre}.k_proj.bias").reshape(cfg.n_kv_heads, cfg.d_head)
        attn["b_V"] = get(f"{pre}.v_proj.bias").reshape(cfg.n_kv_heads, cfg.d_head)
    if cfg.o_bias:
        attn["b_O"] = get(f"{pre}.o_proj.bias")
    return attn


def mlp_from_hf(get: Callable, cfg: Any, l: int) -> Params:
    """W_gate/W_in/W_out (and biases) of layer `l` from `mlp.gate/up/down_proj`."""
    pre = f"model.layers.{l}.mlp"
    mlp = {
        "W_gate": get(f"{pre}.gate_proj.weight").T,
        "W_in": get(f"{pre}.up_proj.weight").T,
        "W_out": get(f"{pre}.down_proj.weight").T,
    }
    if cfg.mlp_bias:
        mlp.update(
            b_gate=get(f"{pre}.gate_proj.bias"),
            b_in=get(f"{pre}.up_proj.bias"),
            b_out=get(f"{pre}.down_proj.bias"),
        )
    return mlp


def assemble(get, tensors, cfg, blocks, shapes, dtype) -> Params:
    """Embeddings, final norm and unembedding around `blocks`, checked against `shapes`."""
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
    nn.check_param_shapes(params, shapes)
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
