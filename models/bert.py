"""BERT encoder as a pure function (Devlin et al. 2019, "BERT: Pre-training of Deep
Bidirectional Transformers for Language Understanding"), for sentence encoders such as
all-MiniLM-L6-v2 (Reimers & Gurevych 2019, Sentence-BERT; Wang et al. 2020, MiniLM).

Architectural features, each with its source:
- embeddings: token + learned absolute position + token type (segment), then LayerNorm
  (Devlin et al. 2019); sites `embed.hook_embed`, `embed.hook_pos_embed`,
  `embed.hook_token_type_embed`, `embed.ln.hook_scale|hook_normalized`, `hook_full_embed`
  (TransformerLens's `HookedEncoder` names);
- post-LayerNorm blocks (Vaswani et al. 2017): `ln1` normalises `resid_pre + attn_out`,
  `ln2` normalises `ln1_out + mlp_out`, as TransformerLens's `BertBlock`
  (`hook_resid_mid` is the un-normalised sum, `hook_normalized_resid_post` the block
  output);
- bidirectional multi-head attention with q/k/v/output biases and a key padding mask;
- a non-gated MLP with exact (erf) GELU (Hendrycks & Gimpel 2016).

`forward` returns the final hidden states [batch, pos, d_model] (no MLM head): an encoder's
output is a representation, not logits. `sentence_embedding` is Sentence-BERT's mean pooling
over real tokens followed by L2 normalisation, the output of all-MiniLM-L6-v2.

Reference: HF transformers `BertModel`; tests check max |diff| <= 1e-4 on tiny random
configs and on the real all-MiniLM-L6-v2 weights (sentence embeddings).

Weights use TransformerLens names and shapes: `W_Q, W_K, W_V [n_heads, d_model, d_head]`,
`b_Q, b_K, b_V [n_heads, d_head]`, `W_O [n_heads, d_head, d_model]`, `W_in [d_model, d_mlp]`,
`W_out [d_mlp, d_model]`, `W_E [d_vocab, d_model]`, `W_pos [n_ctx, d_model]`,
`W_token_type [n_token_types, d_model]`; LayerNorms hold `w` and `b`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mechjax import nn
from mechjax.errors import CheckpointError
from mechjax.hooks import NULL_HOOK, Hook

Array = jax.Array
Params = dict[str, Any]

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class Config:
    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int = 512
    n_token_types: int = 2
    eps: float = 1e-12
    act: str = "gelu"
    model_type: str = "bert"

    def __post_init__(self):
        if self.act not in ACTIVATIONS:
            raise ValueError(f"activation {self.act!r}; supported: {sorted(ACTIVATIONS)}")

    @property
    def n_kv_heads(self) -> int:
        return self.n_heads


def config_from_hf(hf: dict) -> Config:
    """Config from an HF BERT `config.json` dict."""
    mt = hf.get("model_type", "bert")
    if mt != "bert":
        raise CheckpointError(f"model_type {mt!r} is not 'bert'")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError("BERT with relative position embeddings is not supported")
    if hf.get("is_decoder"):
        raise CheckpointError("BERT as a decoder (is_decoder=True) is not supported")
    d_model, n_heads = hf["hidden_size"], hf["num_attention_heads"]
    return Config(
        d_model=d_model,
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_mlp=hf["intermediate_size"],
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 512),
        n_token_types=hf.get("type_vocab_size", 2),
        eps=float(hf.get("layer_norm_eps", 1e-12)),
        act=hf.get("hidden_act", "gelu"),
    )


# ------------------------------------------------------------------------------ sites


def site_names(cfg: Config) -> list[str]:
    """Every site of the forward, in the order the forward visits them."""
    names = [
        "embed.hook_embed",
        "embed.hook_pos_embed",
        "embed.hook_token_type_embed",
        "embed.ln.hook_scale",
        "embed.ln.hook_normalized",
        "hook_full_embed",
    ]
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
            f"{b}.attn.hook_attn_scores",
            f"{b}.attn.hook_pattern",
            f"{b}.attn.hook_z",
            f"{b}.attn.hook_result",
            f"{b}.hook_attn_out",
            f"{b}.hook_resid_mid",
            f"{b}.hook_mlp_in",
            f"{b}.ln1.hook_scale",
            f"{b}.ln1.hook_normalized",
            f"{b}.mlp.hook_pre",
            f"{b}.mlp.hook_post",
            f"{b}.hook_mlp_out",
            f"{b}.hook_resid_post",
            f"{b}.ln2.hook_scale",
            f"{b}.ln2.hook_normalized",
            f"{b}.hook_normalized_resid_post",
        ]
    return names


# ---------------------------------------------------------------------------- forward


def _proj(x, W, b):
    return nn.head_proj(x, W, b)


def _attention(p: Params, resid: Array, cfg: Config, hook: Hook, l: int, mask: Array):
    b = f"blocks.{l}"
    a = p["attn"]
    if any(hook.wants(f"{b}.hook_{s}_input") for s in "qkv"):
        # EAP's split inputs: a per-head copy of the residual stream (post-LN: no norm here)
        def head_input(s):
            x = jnp.broadcast_to(resid[:, :, None, :], resid.shape[:2] + (cfg.n_heads, cfg.d_model))
            return hook(f"{b}.hook_{s}_input", x)

        q_in, k_in, v_in = head_input("q"), head_input("k"), head_input("v")
    else:
        q_in = k_in = v_in = resid
    q = hook(f"{b}.attn.hook_q", _proj(q_in, a["W_Q"], a["b_Q"]))
    k = hook(f"{b}.attn.hook_k", _proj(k_in, a["W_K"], a["b_K"]))
    v = hook(f"{b}.attn.hook_v", _proj(v_in, a["W_V"], a["b_V"]))
    z = nn.attend(q, k, v, mask, hook, f"{b}.attn", scale=cfg.d_head**-0.5)
    return nn.attn_output(z, a["W_O"], a["b_O"], hook, f"{b}.attn")


def forward(
    params: Params,
    tokens: Array,
    cfg: Config,
    *,
    hook: Hook = NULL_HOOK,
    attention_mask: Array | None = None,
    token_type_ids: Array | None = None,
) -> Array:
    """Final hidden states [batch, pos, d_model] for tokens [batch, pos].

    `attention_mask` [batch, pos] (True = real token) hides padding keys from every query;
    position ids are 0..pos-1 as in HF's `BertModel` (pad on the right).
    `token_type_ids` default to 0 (one segment).
    """
    b_, n = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(n), (b_, n))
    if token_type_ids is None:
        token_type_ids = jnp.zeros_like(tokens)
    key_mask = jnp.ones((b_, n), bool) if attention_mask is None else attention_mask.astype(bool)
    mask = jnp.broadcast_to(key_mask[:, None, None, :], (b_, 1, n, n))
    e = params["embed"]
    embed = hook("embed.hook_embed", nn.embed(e["W_E"], tokens))
    pos = hook("embed.hook_pos_embed", nn.embed(e["W_pos"], positions))
    tt = hook("embed.hook_token_type_embed", nn.embed(e["W_token_type"], token_type_ids))
    ln = e["ln"]
    resid = nn.layer_norm(embed + pos + tt, ln["w"], ln["b"], cfg.eps, hook, "embed.ln")
    resid = hook("hook_full_embed", resid)
    for l, p in enumerate(params["blocks"]):
        b = f"blocks.{l}"
        resid = hook(f"{b}.hook_resid_pre", resid)
        attn_out = hook(f"{b}.hook_attn_out", _attention(p, resid, cfg, hook, l, mask))
        resid_mid = hook(f"{b}.hook_resid_mid", resid + attn_out)
        if hook.wants(f"{b}.hook_mlp_in"):
            resid_mid = hook(f"{b}.hook_mlp_in", resid_mid)
        x = nn.layer_norm(resid_mid, p["ln1"]["w"], p["ln1"]["b"], cfg.eps, hook, f"{b}.ln1")
        m = p["mlp"]
        pre = hook(f"{b}.mlp.hook_pre", x @ m["W_in"] + m["b_in"])
        post = hook(f"{b}.mlp.hook_post", ACTIVATIONS[cfg.act](pre))
        mlp_out = hook(f"{b}.hook_mlp_out", post @ m["W_out"] + m["b_out"])
        resid_post = hook(f"{b}.hook_resid_post", x + mlp_out)
        resid = nn.layer_norm(resid_post, p["ln2"]["w"], p["ln2"]["b"], cfg.eps, hook, f"{b}.ln2")
        resid = hook(f"{b}.hook_normalized_resid_post", resid)
    return resid


def mean_pool(hidden: Array, attention_mask: Array | None) -> Array:
    """Mean of the hidden states over real tokens: [batch, pos, d] -> [batch, d]."""
    if attention_mask is None:
        return hidden.mean(axis=1)
    m = attention_mask.astype(hidden.dtype)[..., None]
    return (hidden * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1e-9)


def sentence_embedding(
    params: Params,
    tokens: ArrayLike,
    cfg: Config,
    *,
    hook: Hook = NULL_HOOK,
    attention_mask: Array | None = None,
    normalize: bool = True,
) -> Array:
    """Sentence-BERT embeddings [batch, d_model] of `tokens` [batch, pos].

    The final hidden states averaged over the real tokens (`attention_mask` True; all
    positions without a mask), then divided by their L2 norm (`normalize=False` returns the
    mean-pooled vectors). This is sentence-transformers' Transformer -> Pooling(mean) ->
    Normalize pipeline of all-MiniLM-L6-v2; tokens come from the model's tokenizer, with
    [CLS] and [SEP] (`model.tokenizer.encode_batch(texts)` gives tokens and mask).
    """
    pooled = mean_pool(
        forward(params, jnp.asarray(tokens), cfg, hook=hook, attention_mask=attention_mask),
        attention_mask,
    )
    if not normalize:
        return pooled
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


# ------------------------------------------------------------------------ conversion


def params_from_hf(tensors: dict[str, np.ndarray], cfg: Config, dtype=jnp.float32) -> Params:
    """TransformerLens-named params from HF BERT tensors (`embeddings.word_embeddings...`,
    with or without the `bert.` prefix of the pretraining heads' checkpoints)."""
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""

    def get(name):
        key = prefix + name
        if key not in tensors:
            raise CheckpointError(f"checkpoint has no tensor {key!r} (needed by bert)")
        return np.asarray(tensors[key], np.float32)

    h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head

    def heads_in(w):  # HF Linear [n*d_head, d_model] -> [n, d_model, d_head]
        return w.reshape(h, dh, d).transpose(0, 2, 1)

    def ln(name):
        return {"w": get(f"{name}.weight"), "b": get(f"{name}.bias")}

    blocks = []
    for l in range(cfg.n_layers):
        pre = f"encoder.layer.{l}"
        s = f"{pre}.attention.self"
        blocks.append(
            {
                "attn": {
                    "W_Q": heads_in(get(f"{s}.query.weight")),
                    "b_Q": get(f"{s}.query.bias").reshape(h, dh),
                    "W_K": heads_in(get(f"{s}.key.weight")),
                    "b_K": get(f"{s}.key.bias").reshape(h, dh),
                    "W_V": heads_in(get(f"{s}.value.weight")),
                    "b_V": get(f"{s}.value.bias").reshape(h, dh),
                    "W_O": get(f"{pre}.attention.output.dense.weight").T.reshape(h, dh, d),
                    "b_O": get(f"{pre}.attention.output.dense.bias"),
                },
                "ln1": ln(f"{pre}.attention.output.LayerNorm"),
                "mlp": {
                    "W_in": get(f"{pre}.intermediate.dense.weight").T,
                    "b_in": get(f"{pre}.intermediate.dense.bias"),
                    "W_out": get(f"{pre}.output.dense.weight").T,
                    "b_out": get(f"{pre}.output.dense.bias"),
                },
                "ln2": ln(f"{pre}.output.LayerNorm"),
            }
        )
    params = {
        "embed": {
            "W_E": get("embeddings.word_embeddings.weight"),
            "W_pos": get("embeddings.position_embeddings.weight"),
            "W_token_type": get("embeddings.token_type_embeddings.weight"),
            "ln": ln("embeddings.LayerNorm"),
        },
        "blocks": blocks,
    }
    nn.check_param_shapes(params, param_shapes(cfg))
    return jax.tree.map(lambda x: jnp.asarray(np.ascontiguousarray(x), dtype), params)


def param_shapes(cfg: Config) -> Params:
    """The expected shape of every parameter, as a pytree of tuples."""
    d, h, dh, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    ln = {"w": (d,), "b": (d,)}
    attn = {
        "W_Q": (h, d, dh),
        "b_Q": (h, dh),
        "W_K": (h, d, dh),
        "b_K": (h, dh),
        "W_V": (h, d, dh),
        "b_V": (h, dh),
        "W_O": (h, dh, d),
        "b_O": (d,),
    }
    block = {
        "attn": attn,
        "ln1": ln,
        "mlp": {"W_in": (d, m), "b_in": (m,), "W_out": (m, d), "b_out": (d,)},
        "ln2": ln,
    }
    return {
        "embed": {
            "W_E": (cfg.d_vocab, d),
            "W_pos": (cfg.n_ctx, d),
            "W_token_type": (cfg.n_token_types, d),
            "ln": ln,
        },
        "blocks": [block] * cfg.n_layers,
    }


def init(key: Array, cfg: Config, scale: float = 0.02, dtype=jnp.float32) -> Params:
    """Random params (normal, std `scale`; LayerNorm gains near 1), for tests."""
    return nn.init_from_shapes(key, param_shapes(cfg), scale, dtype)
