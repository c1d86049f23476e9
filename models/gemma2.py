"""Gemma 2 as a pure function (Gemma Team 2024, "Gemma 2: Improving Open Language Models at a
Practical Size"). Gemma Scope's SAEs are keyed on its sites.

Architectural features, each with its source:
- RMSNorm with `(1 + w)` gains, in float32 (the Gemma convention, `models/gemma3.py`);
- "sandwich" norms: RMSNorm before and after attention and before and after the MLP,
  the post-norms applied to the sublayer output before it joins the residual stream
  (sites `ln1`, `ln1_post`, `ln2`, `ln2_post`, as TransformerLens's Gemma 2 port);
- tanh soft-capping of the attention scores (`attn_softcap`, 50) before the mask, and
  of the final logits (`final_softcap`, 30) (Gemma 2 report, section 2);
- interleaved local/global attention: with HF's default `layer_types`, even layers
  attend to the last `sliding_window` (4096) tokens and odd layers globally; one RoPE
  base for both (10k);
- GeGLU MLP (tanh GELU), grouped-query attention scaled by `query_pre_attn_scalar ** -0.5`
  (256; 144 = d_model / n_heads for the 27B model), embeddings times sqrt(d_model) in
  the embedding dtype, tied unembedding; optional q/k/v/o biases (`attention_bias`);
- incremental decoding with a KV cache (`decode`).

Gemma 2 is Gemma 3 without QK-norm and with soft-capped attention, so it runs on
`models/gemma3.py`'s block with its own attention sublayer.

Reference: HF transformers `Gemma2ForCausalLM`; tests check max |logit diff| <= 1e-4
(float32, tiny random configs with local and global layers, prompts longer than the
window, soft-capping on).

Norm gains `w` hold HF's offsets (a gain of `1 + w` is applied). llama.cpp stores
`1 + w`; the GGUF reader subtracts 1.
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

from . import gemma3, llama

Array = jax.Array
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int = 8192
    eps: float = 1e-6
    rope_theta: float = 10_000.0
    sliding_window: int = 4096
    layer_types: tuple[bool, ...] = ()  # True = sliding-window layer; () = even layers
    query_pre_attn_scalar: float = 256.0
    attn_softcap: float | None = 50.0
    final_softcap: float | None = 30.0
    act: str = "gelu_pytorch_tanh"
    tie_embeddings: bool = True
    bias: bool = False  # HF's attention_bias: biases on q/k/v/o
    model_type: str = "gemma2"

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if self.act not in gemma3.ACTIVATIONS:
            raise ValueError(f"activation {self.act!r}; supported: {sorted(gemma3.ACTIVATIONS)}")
        if not self.layer_types:
            types = gemma3.default_layer_types(self.n_layers, pattern=2)
            object.__setattr__(self, "layer_types", types)
        if len(self.layer_types) != self.n_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries for {self.n_layers} layers"
            )

    def is_sliding(self, layer: int) -> bool:
        return bool(self.layer_types[layer])

    # the names `models.llama`'s converter pieces read
    qkv_bias = property(lambda self: self.bias)
    o_bias = property(lambda self: self.bias)
    mlp_bias = property(lambda self: False)


HF_TYPES = ("gemma2",)


def config_from_hf(hf: dict) -> Config:
    """Config from an HF `Gemma2Config` dict."""
    mt = hf.get("model_type", "gemma2")
    if mt not in HF_TYPES:
        raise CheckpointError(f"model_type {mt!r} is not a Gemma 2 type {HF_TYPES}")
    if hf.get("use_bidirectional_attention"):
        raise CheckpointError("Gemma 2 with use_bidirectional_attention=True is not supported")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise CheckpointError(f"Gemma 2 rope type {rope.get('rope_type')!r} is not supported")
    n_layers, n_heads = hf["num_hidden_layers"], hf["num_attention_heads"]
    types = hf.get("layer_types")
    return Config(
        d_model=hf["hidden_size"],
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        d_head=hf.get("head_dim") or 256,
        d_mlp=hf["intermediate_size"],
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 8192),
        eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0))),
        sliding_window=int(hf.get("sliding_window") or 4096),
        layer_types=tuple(t == "sliding_attention" for t in types) if types else (),
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
        attn_softcap=hf.get("attn_logit_softcapping"),
        final_softcap=hf.get("final_logit_softcapping"),
        act=hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh",
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        bias=bool(hf.get("attention_bias", False)),
    )


# ------------------------------------------------------------------------------ sites


def site_names(cfg: Config) -> list[str]:
    """Every site of the forward, in the order the forward visits them (Gemma 3's
    without the QK-norm sites)."""
    names = ["hook_embed"]
    for l in range(cfg.n_layers):
        b = f"blocks.{l}"
        names += [f"{b}.hook_resid_pre", f"{b}.ln1.hook_scale", f"{b}.ln1.hook_normalized"]
        names += [f"{b}.hook_{s}_input" for s in "qkv"]
        names += [f"{b}.attn.hook_{s}" for s in ("q", "k", "v", "rot_q", "rot_k")]
        names += [f"{b}.attn.hook_{s}" for s in ("attn_scores", "pattern", "z", "result")]
        names += [f"{b}.ln1_post.hook_scale", f"{b}.ln1_post.hook_normalized"]
        names += [f"{b}.hook_attn_out", f"{b}.hook_resid_mid", f"{b}.hook_mlp_in"]
        names += [f"{b}.ln2.hook_scale", f"{b}.ln2.hook_normalized"]
        names += [f"{b}.mlp.hook_{s}" for s in ("pre", "pre_linear", "post")]
        names += [f"{b}.ln2_post.hook_scale", f"{b}.ln2_post.hook_normalized"]
        names += [f"{b}.hook_mlp_out", f"{b}.hook_resid_post"]
    return names + ["ln_final.hook_scale", "ln_final.hook_normalized"]


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
    q, k, v = gemma3.qkv(p, resid, cfg, hook, l)
    inv_freq = nn.rope_inv_freq(cfg.d_head, cfg.rope_theta)
    return gemma3.rotary_attention(
        p["attn"], q, k, v, cfg, hook, l, positions, mask, cache, start, inv_freq
    )


def _masks(positions, k_positions, key_mask, cfg: Config):
    """(global, sliding-window) boolean masks, as `models.gemma3` builds them."""
    return (
        nn.attention_mask(positions, k_positions, key_mask, None),
        nn.attention_mask(positions, k_positions, key_mask, cfg.sliding_window),
    )


def forward(
    params: Params,
    tokens: Array,
    cfg: Config,
    *,
    hook: Hook = NULL_HOOK,
    attention_mask: Array | None = None,
) -> Array:
    """Logits [batch, pos, d_vocab] for tokens [batch, pos] (soft-capped).

    `attention_mask` [batch, pos] (True = real token) handles padding on either side:
    position ids count real tokens only.
    """
    positions = nn.positions_from_mask(attention_mask, tokens.shape)
    masks = _masks(positions, positions, attention_mask, cfg)
    return gemma3._transformer(params, tokens, cfg, hook, positions, masks, attention=_attention)[0]


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
    """New tokens [batch, n_new] against a KV cache, as `models.gemma3.decode`."""
    positions, cache, start = kv_cache.begin(cache, attention_mask, tokens.shape[1])
    masks = _masks(positions, cache.positions, cache.valid, cfg)
    logits, cache = gemma3._transformer(
        params, tokens, cfg, hook, positions, masks, cache, start, last_only, _attention
    )
    return DecodeOutput(logits, cache)


# ------------------------------------------------------------------------ conversion


def params_from_hf(tensors: dict[str, np.ndarray], cfg: Config, dtype=jnp.float32) -> Params:
    """TransformerLens-named params from HF Gemma 2 tensors (`model.layers.0.self_attn...`,
    Llama's names plus the sandwich norms)."""
    get = llama.tensor_getter(tensors, cfg)
    blocks = []
    for l in range(cfg.n_layers):
        pre = f"model.layers.{l}"
        blocks.append(
            {
                "ln1": {"w": get(f"{pre}.input_layernorm.weight")},
                "attn": llama.attn_from_hf(get, cfg, l),
                "ln1_post": {"w": get(f"{pre}.post_attention_layernorm.weight")},
                "ln2": {"w": get(f"{pre}.pre_feedforward_layernorm.weight")},
                "mlp": llama.mlp_from_hf(get, cfg, l),
                "ln2_post": {"w": get(f"{pre}.post_feedforward_layernorm.weight")},
            }
        )
    return llama.assemble(get, tensors, cfg, blocks, param_shapes(cfg), dtype)


def param_shapes(cfg: Config) -> Params:
    """The expected shape of every parameter, as a pytree of tuples."""
    d, h, kv, dh, m = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp
    attn: dict[str, tuple[int, ...]] = {
        "W_Q": (h, d, dh),
        "W_K": (kv, d, dh),
        "W_V": (kv, d, dh),
        "W_O": (h, dh, d),
    }
    if cfg.bias:
        attn.update(b_Q=(h, dh), b_K=(kv, dh), b_V=(kv, dh), b_O=(d,))
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
    """Random params (normal, std `scale`); norm gains are offsets from 1, drawn near 0."""
    return gemma3.init_offset_gains(key, param_shapes(cfg), cfg.tie_embeddings, scale, dtype)
