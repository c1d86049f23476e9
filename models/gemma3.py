"""Gemma 3 text models as a pure function (Gemma Team 2025, "Gemma 3 Technical Report").

Architectural features, each with its source:
- RMSNorm with `(1 + w)` gains (the Gemma convention: stored weights are offsets from 1),
  computed in float32 and applied before the cast back, as HF's `Gemma3RMSNorm`;
- "sandwich" norms (Gemma 2; Gemma Team 2024): RMSNorm before and after attention and
  before and after the MLP, the post-norms applied to the sublayer output before it is
  added to the residual stream. Sites follow TransformerLens's Gemma port: `ln1`,
  `ln1_post`, `ln2`, `ln2_post`, each with `hook_scale` and `hook_normalized`;
- QK-norm (Dehghani et al. 2023; Gemma 3): an RMSNorm over `d_head` of each query and key
  head after projection and before RoPE, sites `attn.q_norm.hook_scale|hook_normalized`
  and `attn.k_norm...` (TransformerLens's `q_norm`/`k_norm` modules);
- GeGLU MLP with the tanh approximation of GELU (Shazeer 2020), `mlp.hook_pre` (gate),
  `mlp.hook_pre_linear` (up), `mlp.hook_post`;
- grouped-query attention with scores scaled by `query_pre_attn_scalar ** -0.5`;
- interleaved local/global attention: layers whose `layer_types` entry is sliding attend
  to the last `sliding_window` tokens with RoPE base `rope_local_theta` (10k), the others
  attend globally with RoPE base `rope_theta` (1M);
- token embeddings multiplied by sqrt(d_model), rounded to the embedding dtype as HF does
  (`hook_embed` is the scaled embedding, the residual stream's first value); the
  unembedding is tied to the unscaled embedding;
- optional tanh soft-capping of attention scores and final logits (Gemma 2; None in 3);
- incremental decoding with a KV cache (`decode`, `mechjax.kv_cache`).

Reference: HF transformers `Gemma3ForCausalLM` (`gemma3_text`); tests check max |logit
diff| <= 1e-4 on tiny random configs and <= 1e-3 on Gemma 3 270M's GGUF Q4_K_M weights
read by HF itself.

Norm gains `w` hold HF's offsets (a gain of `1 + w` is applied). llama.cpp stores `1 + w`;
the GGUF reader subtracts 1 as HF's GGUF loader does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

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
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
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
    n_ctx: int = 32768
    eps: float = 1e-6
    rope_theta: float = 1_000_000.0  # global layers
    rope_local_theta: float = 10_000.0  # sliding-window layers
    rope_scaling: tuple | None = None  # global layers only, sorted items of HF's dict
    sliding_window: int = 512
    layer_types: tuple[bool, ...] = ()  # True = sliding-window layer; () = pattern 6
    query_pre_attn_scalar: float = 256.0
    attn_softcap: float | None = None
    final_softcap: float | None = None
    act: str = "gelu_pytorch_tanh"
    tie_embeddings: bool = True
    model_type: str = "gemma3_text"

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if self.act not in ACTIVATIONS:
            raise ValueError(f"activation {self.act!r}; supported: {sorted(ACTIVATIONS)}")
        if not self.layer_types:
            object.__setattr__(self, "layer_types", default_layer_types(self.n_layers))
        if len(self.layer_types) != self.n_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries for {self.n_layers} layers"
            )

    def is_sliding(self, layer: int) -> bool:
        return bool(self.layer_types[layer])


def default_layer_types(n_layers: int, pattern: int = 6) -> tuple[bool, ...]:
    """Gemma 3's interleaving: every `pattern`-th layer is global, the others sliding."""
    return tuple(bool((i + 1) % pattern) for i in range(n_layers))


HF_TYPES = ("gemma3_text", "gemma3")


def config_from_hf(hf: dict) -> Config:
    """Config from an HF `Gemma3TextConfig` dict (or the `text_config` of a `gemma3` one)."""
    if hf.get("model_type") == "gemma3" and "text_config" in hf:
        hf = hf["text_config"]
    mt = hf.get("model_type", "gemma3_text")
    if mt not in HF_TYPES:
        raise CheckpointError(f"model_type {mt!r} is not a Gemma 3 type {HF_TYPES}")
    if hf.get("use_bidirectional_attention"):
        raise CheckpointError("Gemma 3 with use_bidirectional_attention=True is not supported")
    n_layers = hf["num_hidden_layers"]
    n_heads = hf["num_attention_heads"]
    rp = hf.get("rope_parameters") or {}
    glob, local = rp.get("full_attention") or {}, rp.get("sliding_attention") or {}
    theta = glob.get("rope_theta", hf.get("rope_theta", 1_000_000.0))
    local_theta = local.get("rope_theta", hf.get("rope_local_base_freq", 10_000.0))
    scaling = hf.get("rope_scaling") or None
    if scaling is None and glob.get("rope_type", "default") != "default":
        scaling = glob
    if scaling and scaling.get("rope_type", scaling.get("type")) == "default":
        scaling = None
    if local.get("rope_type", "default") != "default":
        raise CheckpointError("Gemma 3 with scaled RoPE on sliding layers is not supported")
    types = hf.get("layer_types")
    if types:
        layer_types = tuple(t == "sliding_attention" for t in types)
    else:
        pattern = hf.get("sliding_window_pattern", 6)
        layer_types = default_layer_types(n_layers, pattern)
    return Config(
        d_model=hf["hidden_size"],
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        d_head=hf.get("head_dim") or 256,
        d_mlp=hf["intermediate_size"],
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 32768),
        eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=float(theta),
        rope_local_theta=float(local_theta),
        rope_scaling=None
        if not scaling
        else tuple(sorted((k, v) for k, v in scaling.items() if not isinstance(v, (list, dict)))),
        sliding_window=int(hf.get("sliding_window") or 4096),
        layer_types=layer_types,
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
        # HF's Gemma3Attention never applies attn_logit_softcapping (Gemma 3 sets it to None);
        # the port follows the reference, so a checkpoint that sets it runs as HF runs it.
        attn_softcap=None,
        final_softcap=hf.get("final_logit_softcapping"),
        act=hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh",
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
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
            f"{b}.ln2.hook_scale",
            f"{b}.ln2.hook_normalized",
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


def _norm(x: Array, w: Array, cfg: Any, hook: Hook, prefix: str) -> Array:
    """Gemma RMSNorm: float32 statistics, gain (1 + w), cast back to the input dtype.
    (`cfg`: any config with `eps`; Gemma 2's too.)"""
    wide = jnp.promote_types(x.dtype, jnp.float32)
    y = nn.rms_norm(x.astype(wide), w.astype(wide), cfg.eps, hook, prefix, offset=1.0)
    return y.astype(x.dtype)


def qkv(p: Params, resid: Array, cfg: Any, hook: Hook, l: int) -> tuple[Array, Array, Array]:
    """q, k, v [batch, pos, heads, d_head] of block `l` (sites `attn.hook_q/k/v`), from
    `ln1` of the block input or from EAP's split inputs; biases where the params have them."""
    b = f"blocks.{l}"
    a = p["attn"]
    if any(hook.wants(f"{b}.hook_{s}_input") for s in "qkv"):
        # EAP's split inputs: each head reads and normalises its own copy of the residual.
        def head_input(s, n):
            x = jnp.broadcast_to(resid[:, :, None, :], resid.shape[:2] + (n, cfg.d_model))
            x = hook(f"{b}.hook_{s}_input", x)
            return _norm(x, p["ln1"]["w"], cfg, NULL_HOOK, "")

        q_in, k_in = head_input("q", cfg.n_heads), head_input("k", cfg.n_kv_heads)
        v_in = head_input("v", cfg.n_kv_heads)
    else:
        q_in = k_in = v_in = _norm(resid, p["ln1"]["w"], cfg, hook, f"{b}.ln1")
    q = hook(f"{b}.attn.hook_q", nn.head_proj(q_in, a["W_Q"], a.get("b_Q")))
    k = hook(f"{b}.attn.hook_k", nn.head_proj(k_in, a["W_K"], a.get("b_K")))
    v = hook(f"{b}.attn.hook_v", nn.head_proj(v_in, a["W_V"], a.get("b_V")))
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
    inv_freq: Array,
):
    """RoPE (sites `hook_rot_q/k`), the KV cache, attention scaled by
    `query_pre_attn_scalar ** -0.5` and soft-capped by `attn_softcap`, and its output."""
    b = f"blocks.{l}"
    q = hook(f"{b}.attn.hook_rot_q", nn.apply_rope(q, positions, inv_freq))
    k = hook(f"{b}.attn.hook_rot_k", nn.apply_rope(k, positions, inv_freq))
    if cache is not None:
        k, v, cache = kv_cache.write(cache, l, k, v, start)
    z = nn.attend(
        q,
        k,
        v,
        mask,
        hook,
        f"{b}.attn",
        scale=cfg.query_pre_attn_scalar**-0.5,
        softcap=cfg.attn_softcap,
    )
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
    b = f"blocks.{l}"
    a = p["attn"]
    q, k, v = qkv(p, resid, cfg, hook, l)
    q = _norm(q, a["q_norm"]["w"], cfg, hook, f"{b}.attn.q_norm")
    k = _norm(k, a["k_norm"]["w"], cfg, hook, f"{b}.attn.k_norm")
    if cfg.is_sliding(l):
        inv_freq = nn.rope_inv_freq(cfg.d_head, cfg.rope_local_theta)
    else:
        inv_freq = nn.rope_inv_freq(cfg.d_head, cfg.rope_theta, dict(cfg.rope_scaling or ()))
    return rotary_attention(a, q, k, v, cfg, hook, l, positions, mask, cache, start, inv_freq)


def _mlp(p: Params, x: Array, cfg: Any, hook: Hook, l: int) -> Array:
    b = f"blocks.{l}"
    m = p["mlp"]
    pre = hook(f"{b}.mlp.hook_pre", x @ m["W_gate"])
    lin = hook(f"{b}.mlp.hook_pre_linear", x @ m["W_in"])
    post = hook(f"{b}.mlp.hook_post", ACTIVATIONS[cfg.act](pre) * lin)
    return post @ m["W_out"]


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
    position ids count real tokens only, so a padded prompt gives the logits it gives alone.
    """
    positions = nn.positions_from_mask(attention_mask, tokens.shape)
    masks = (
        nn.attention_mask(positions, positions, attention_mask, None),
        nn.attention_mask(positions, positions, attention_mask, cfg.sliding_window),
    )
    return _transformer(params, tokens, cfg, hook, positions, masks)[0]


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

    As `models.llama.decode`: every site fires at every step; sliding-window layers mask
    cached keys more than `sliding_window` positions back (the cache keeps every slot).
    """
    positions, cache, start = kv_cache.begin(cache, attention_mask, tokens.shape[1])
    masks = (
        nn.attention_mask(positions, cache.positions, cache.valid, None),
        nn.attention_mask(positions, cache.positions, cache.valid, cfg.sliding_window),
    )
    logits, cache = _transformer(
        params, tokens, cfg, hook, positions, masks, cache, start, last_only
    )
    return DecodeOutput(logits, cache)


def _transformer(
    params,
    tokens,
    cfg,
    hook,
    positions,
    masks,
    cache: Any = None,
    start: Any = None,
    last_only=False,
    attention: Callable | None = None,
):
    """The forward from embeddings to logits; `attention`: another family's attention
    sublayer on this block (Gemma 2's), default Gemma 3's."""
    attention = attention or _attention
    W_E = params["embed"]["W_E"]
    emb = nn.embed(W_E, tokens) * jnp.asarray(cfg.d_model**0.5, W_E.dtype)
    resid = hook("hook_embed", emb)
    for l, p in enumerate(params["blocks"]):
        b = f"blocks.{l}"
        mask = masks[1] if cfg.is_sliding(l) else masks[0]
        resid = hook(f"{b}.hook_resid_pre", resid)
        attn, cache = attention(p, resid, cfg, hook, l, positions, mask, cache, start)
        attn_out = hook(
            f"{b}.hook_attn_out", _norm(attn, p["ln1_post"]["w"], cfg, hook, f"{b}.ln1_post")
        )
        resid = hook(f"{b}.hook_resid_mid", resid + attn_out)
        mlp_in = hook(f"{b}.hook_mlp_in", resid) if hook.wants(f"{b}.hook_mlp_in") else resid
        x = _norm(mlp_in, p["ln2"]["w"], cfg, hook, f"{b}.ln2")
        mlp = _mlp(p, x, cfg, hook, l)
        mlp_out = hook(
            f"{b}.hook_mlp_out", _norm(mlp, p["ln2_post"]["w"], cfg, hook, f"{b}.ln2_post")
        )
        resid = hook(f"{b}.hook_resid_post", resid + mlp_out)
    x = _norm(resid, params["ln_final"]["w"], cfg, hook, "ln_final")
    if last_only:
        x = x[:, -1:]
    logits = nn.unembed(x, params["unembed"])
    if cfg.final_softcap is not None:
        logits = jnp.tanh(logits / cfg.final_softcap) * cfg.final_softcap
    return logits, cache


# ------------------------------------------------------------------------ conversion


def params_from_hf(tensors: dict[str, np.ndarray], cfg: Config, dtype=jnp.float32) -> Params:
    """TransformerLens-named params from HF Gemma 3 tensors (`model.layers.0.self_attn...`).

    Accepts the text model's names and the multimodal checkpoint's
    `model.language_model.` / `language_model.model.` prefixes.
    """
    prefix = "model."
    for cand in ("model.language_model.", "language_model.model.", "model."):
        if f"{cand}embed_tokens.weight" in tensors:
            prefix = cand
            break

    def get(name):
        key = prefix + name
        if key not in tensors:
            raise CheckpointError(f"checkpoint has no tensor {key!r} (needed by gemma3)")
        return np.asarray(tensors[key], np.float32)

    def heads_in(w, n):  # HF [n*d_head, d_model] -> [n, d_model, d_head]
        return w.reshape(n, cfg.d_head, cfg.d_model).transpose(0, 2, 1)

    blocks = []
    for l in range(cfg.n_layers):
        pre = f"layers.{l}"
        blocks.append(
            {
                "ln1": {"w": get(f"{pre}.input_layernorm.weight")},
                "attn": {
                    "W_Q": heads_in(get(f"{pre}.self_attn.q_proj.weight"), cfg.n_heads),
                    "W_K": heads_in(get(f"{pre}.self_attn.k_proj.weight"), cfg.n_kv_heads),
                    "W_V": heads_in(get(f"{pre}.self_attn.v_proj.weight"), cfg.n_kv_heads),
                    "W_O": get(f"{pre}.self_attn.o_proj.weight").T.reshape(
                        cfg.n_heads, cfg.d_head, cfg.d_model
                    ),
                    "q_norm": {"w": get(f"{pre}.self_attn.q_norm.weight")},
                    "k_norm": {"w": get(f"{pre}.self_attn.k_norm.weight")},
                },
                "ln1_post": {"w": get(f"{pre}.post_attention_layernorm.weight")},
                "ln2": {"w": get(f"{pre}.pre_feedforward_layernorm.weight")},
                "mlp": {
                    "W_gate": get(f"{pre}.mlp.gate_proj.weight").T,
                    "W_in": get(f"{pre}.mlp.up_proj.weight").T,
                    "W_out": get(f"{pre}.mlp.down_proj.weight").T,
                },
                "ln2_post": {"w": get(f"{pre}.post_feedforward_layernorm.weight")},
            }
        )
    W_E = get("embed_tokens.weight")
    if cfg.tie_embeddings or "lm_head.weight" not in tensors:
        W_U = W_E.T
    else:
        W_U = np.asarray(tensors["lm_head.weight"], np.float32).T
    params = {
        "embed": {"W_E": W_E},
        "blocks": blocks,
        "ln_final": {"w": get("norm.weight")},
        "unembed": {"W_U": np.ascontiguousarray(W_U)},
    }
    nn.check_param_shapes(params, param_shapes(cfg))
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def param_shapes(cfg: Config) -> Params:
    """The expected shape of every parameter, as a pytree of tuples."""
    d, h, kv, dh, m = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp
    attn = {
        "W_Q": (h, d, dh),
        "W_K": (kv, d, dh),
        "W_V": (kv, d, dh),
        "W_O": (h, dh, d),
        "q_norm": {"w": (dh,)},
        "k_norm": {"w": (dh,)},
    }
    block = {
        "ln1": {"w": (d,)},
        "attn": attn,
        "ln1_post": {"w": (d,)},
        "ln2": {"w": (d,)},
        "mlp": {"W_gate": (d, m), "W_in": (d, m), "W_out": (m, d)},
        "ln2_post": {"w": (d,)},
    }
    return {
        "embed": {"W_E": (cfg.d_vocab, d)},
        "blocks": [block] * cfg.n_layers,
        "ln_final": {"w": (d,)},
        "unembed": {"W_U": (d, cfg.d_vocab)},
    }


def init(key: Array, cfg: Config, scale: float = 0.02, dtype=jnp.float32) -> Params:
    """Random params (normal, std `scale`), for tests and training studies.

    Norm gains are offsets from 1 here, so they are drawn near 0 (gain near 1).
    """
    return init_offset_gains(key, param_shapes(cfg), cfg.tie_embeddings, scale, dtype)


def init_offset_gains(key: Array, shapes: Params, tied: bool, scale: float, dtype) -> Params:
    """Random params of `shapes` (normal, std `scale`) whose norm gains `w` are offsets
    from 1, drawn near 0; `W_U = W_E.T` if `tied` (Gemma 2 and 3)."""
    params = nn.init_from_shapes(key, shapes, scale, dtype)
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x - 1 if jax.tree_util.keystr(p).endswith("['w']") else x, params
    )
    if tied:
        params["unembed"]["W_U"] = params["embed"]["W_E"].T
    return params
