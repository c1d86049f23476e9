"""GPT-2 family as a pure function (Radford et al. 2019, "Language Models are
Unsupervised Multitask Learners").

Architectural features, each with its source:
- learned absolute position embeddings added to the token embeddings (Radford et al.
  2018, GPT-1), site `hook_pos_embed`;
- pre-LayerNorm blocks (Ba et al. 2016 LayerNorm; moved to the sublayer input in GPT-2)
  and a final LayerNorm `ln_final`;
- multi-head attention with biases on q/k/v and the output (Vaswani et al. 2017), scores
  scaled by 1/sqrt(d_head) and optionally by 1/(layer + 1) (HF's
  `scale_attn_by_inverse_layer_idx`, used by Mistral's Stanford CRFM GPT-2 runs);
- a non-gated MLP with the tanh approximation of GELU, `gelu_new` (Hendrycks & Gimpel
  2016), so `mlp.hook_pre` and `mlp.hook_post` but no `mlp.hook_pre_linear`;
- the unembedding tied to the token embedding (stored anyway as `W_U`);
- incremental decoding with a KV cache (`decode`, `mechjax.kv_cache`), with every site
  firing at every step so interventions apply during generation.

Reference: HF transformers `GPT2LMHeadModel`; tests check max |logit diff| <= 1e-4
(float32, tiny random configs with weights at std 0.2).

Weights use TransformerLens names and shapes. HF stores the fused `c_attn` Conv1D weight
as [d_model, 3 * d_model] (input-major); it is split on load into
`W_Q, W_K, W_V [n_heads, d_model, d_head]`, `b_Q, b_K, b_V [n_heads, d_head]`, with
`W_O [n_heads, d_head, d_model]`, `b_O [d_model]`, `W_in [d_model, d_mlp]`, `b_in`,
`W_out [d_mlp, d_model]`, `b_out`, `W_E [d_vocab, d_model]`, `W_pos [n_ctx, d_model]`,
`W_U [d_model, d_vocab]`; LayerNorms hold `w` and `b`.
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
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
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
    n_ctx: int = 1024
    eps: float = 1e-5
    act: str = "gelu_new"
    scale_attn_by_inverse_layer_idx: bool = False
    tie_embeddings: bool = True
    model_type: str = "gpt2"

    def __post_init__(self):
        if self.act not in ACTIVATIONS:
            raise ValueError(f"activation {self.act!r}; supported: {sorted(ACTIVATIONS)}")

    @property
    def n_kv_heads(self) -> int:
        """GPT-2 has one key/value head per query head (kept for family-generic code)."""
        return self.n_heads


def config_from_hf(hf: dict) -> Config:
    """Config from an HF GPT-2 `config.json` dict."""
    mt = hf.get("model_type", "gpt2")
    if mt != "gpt2":
        raise CheckpointError(f"model_type {mt!r} is not 'gpt2'")
    # reorder_and_upcast_attn only changes half-precision numerics; float32 is the same.
    if not hf.get("scale_attn_weights", True):
        raise CheckpointError("GPT-2 with scale_attn_weights=False is not supported")
    d_model, n_heads = hf["n_embd"], hf["n_head"]
    return Config(
        d_model=d_model,
        n_layers=hf["n_layer"],
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_mlp=hf.get("n_inner") or 4 * d_model,
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("n_positions", 1024),
        eps=hf.get("layer_norm_epsilon", 1e-5),
        act=hf.get("activation_function", "gelu_new"),
        scale_attn_by_inverse_layer_idx=bool(hf.get("scale_attn_by_inverse_layer_idx", False)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
    )


# ------------------------------------------------------------------------------ sites


def site_names(cfg: Config) -> list[str]:
    """Every site of the forward, in the order the forward visits them."""
    names = ["hook_embed", "hook_pos_embed"]
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
    mask: Array,
    cache: KVCache | None = None,
    start: Any = None,
):
    b = f"blocks.{l}"
    a, ln = p["attn"], p["ln1"]
    if any(hook.wants(f"{b}.hook_{s}_input") for s in "qkv"):
        # EAP's split inputs (TransformerLens's use_split_qkv_input): each head reads its
        # own copy of the residual stream and normalises it itself, so an edge into head
        # h's q, k or v can be patched alone.
        def head_input(s):
            x = jnp.broadcast_to(resid[:, :, None, :], resid.shape[:2] + (cfg.n_heads, cfg.d_model))
            x = hook(f"{b}.hook_{s}_input", x)
            return nn.layer_norm(x, ln["w"], ln["b"], cfg.eps, NULL_HOOK, "")

        q_in, k_in, v_in = head_input("q"), head_input("k"), head_input("v")
    else:
        q_in = k_in = v_in = nn.layer_norm(resid, ln["w"], ln["b"], cfg.eps, hook, f"{b}.ln1")
    q = hook(f"{b}.attn.hook_q", _proj(q_in, a["W_Q"], a["b_Q"]))
    k = hook(f"{b}.attn.hook_k", _proj(k_in, a["W_K"], a["b_K"]))
    v = hook(f"{b}.attn.hook_v", _proj(v_in, a["W_V"], a["b_V"]))
    scale = cfg.d_head**-0.5
    if cfg.scale_attn_by_inverse_layer_idx:
        scale /= l + 1
    if cache is not None:  # decoding: attend over every cached token plus the new ones
        k, v, cache = kv_cache.write(cache, l, k, v, start)
    z = nn.attend(q, k, v, mask, hook, f"{b}.attn", scale=scale)
    return nn.attn_output(z, a["W_O"], a["b_O"], hook, f"{b}.attn"), cache


def _mlp(p: Params, x: Array, cfg: Config, hook: Hook, l: int) -> Array:
    b = f"blocks.{l}"
    m = p["mlp"]
    pre = hook(f"{b}.mlp.hook_pre", x @ m["W_in"] + m["b_in"])
    post = hook(f"{b}.mlp.hook_post", ACTIVATIONS[cfg.act](pre))
    return post @ m["W_out"] + m["b_out"]


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
    alone. A position past `n_ctx` gives NaN rather than a silently clamped embedding.
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

    As `models.llama.decode`: the same sites fire as in `forward` (`attn_scores`/`pattern`
    are `[batch, n_heads, n_new, max_len]` over the cache slots), position embeddings are
    looked up at each row's position ids (real tokens counted, so left padding is
    transparent), and `last_only` computes logits for the last new token only.
    """
    positions, cache, start = kv_cache.begin(cache, attention_mask, tokens.shape[1])
    mask = nn.attention_mask(positions, cache.positions, cache.valid, None)
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
    embed = hook("hook_embed", nn.embed(params["embed"]["W_E"], tokens))
    pos_embed = hook("hook_pos_embed", nn.embed(params["pos_embed"]["W_pos"], positions))
    resid = embed + pos_embed
    for l, p in enumerate(params["blocks"]):
        b = f"blocks.{l}"
        resid = hook(f"{b}.hook_resid_pre", resid)
        attn_out, cache = _attention(p, resid, cfg, hook, l, mask, cache, start)
        attn_out = hook(f"{b}.hook_attn_out", attn_out)
        resid = hook(f"{b}.hook_resid_mid", resid + attn_out)
        mlp_in = hook(f"{b}.hook_mlp_in", resid) if hook.wants(f"{b}.hook_mlp_in") else resid
        x = nn.layer_norm(mlp_in, p["ln2"]["w"], p["ln2"]["b"], cfg.eps, hook, f"{b}.ln2")
        mlp_out = hook(f"{b}.hook_mlp_out", _mlp(p, x, cfg, hook, l))
        resid = hook(f"{b}.hook_resid_post", resid + mlp_out)
    ln = params["ln_final"]
    x = nn.layer_norm(resid, ln["w"], ln["b"], cfg.eps, hook, "ln_final")
    if last_only:
        x = x[:, -1:]
    logits = nn.unembed(x, params["unembed"])
    return logits, cache


# ------------------------------------------------------------------------ conversion


def params_from_hf(tensors: dict[str, np.ndarray], cfg: Config, dtype=jnp.float32) -> Params:
    """TransformerLens-named params from HF GPT-2 tensors.

    Accepts both `transformer.h.0.attn.c_attn.weight` (a `GPT2LMHeadModel` state dict)
    and `h.0.attn.c_attn.weight` (the hub's `GPT2Model` checkpoints). HF's Conv1D layers
    store weights as [in, out].
    """
    prefix = "transformer." if "transformer.wte.weight" in tensors else ""

    def get(name):
        key = prefix + name
        if key not in tensors:
            raise CheckpointError(f"checkpoint has no tensor {key!r} (needed by gpt2)")
        return np.asarray(tensors[key], np.float32)

    h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head

    def heads_in(w):  # [d_model, n_heads * d_head] -> [n_heads, d_model, d_head]
        return w.reshape(d, h, dh).transpose(1, 0, 2)

    blocks = []
    for l in range(cfg.n_layers):
        pre = f"h.{l}"
        W_q, W_k, W_v = np.split(get(f"{pre}.attn.c_attn.weight"), 3, axis=1)
        b_q, b_k, b_v = np.split(get(f"{pre}.attn.c_attn.bias"), 3)
        blocks.append(
            {
                "ln1": {"w": get(f"{pre}.ln_1.weight"), "b": get(f"{pre}.ln_1.bias")},
                "attn": {
                    "W_Q": heads_in(W_q),
                    "W_K": heads_in(W_k),
                    "W_V": heads_in(W_v),
                    "b_Q": b_q.reshape(h, dh),
                    "b_K": b_k.reshape(h, dh),
                    "b_V": b_v.reshape(h, dh),
                    "W_O": get(f"{pre}.attn.c_proj.weight").reshape(h, dh, d),
                    "b_O": get(f"{pre}.attn.c_proj.bias"),
                },
                "ln2": {"w": get(f"{pre}.ln_2.weight"), "b": get(f"{pre}.ln_2.bias")},
                "mlp": {
                    "W_in": get(f"{pre}.mlp.c_fc.weight"),
                    "b_in": get(f"{pre}.mlp.c_fc.bias"),
                    "W_out": get(f"{pre}.mlp.c_proj.weight"),
                    "b_out": get(f"{pre}.mlp.c_proj.bias"),
                },
            }
        )
    W_E = get("wte.weight")
    if cfg.tie_embeddings or "lm_head.weight" not in tensors:
        W_U = W_E.T
    else:
        W_U = np.asarray(tensors["lm_head.weight"], np.float32).T
    params = {
        "embed": {"W_E": W_E},
        "pos_embed": {"W_pos": get("wpe.weight")},
        "blocks": blocks,
        "ln_final": {"w": get("ln_f.weight"), "b": get("ln_f.bias")},
        "unembed": {"W_U": np.ascontiguousarray(W_U)},
    }
    nn.check_param_shapes(params, param_shapes(cfg))
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def param_shapes(cfg: Config) -> Params:
    """The expected shape of every parameter, as a pytree of tuples."""
    d, h, dh, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    attn = {
        "W_Q": (h, d, dh),
        "W_K": (h, d, dh),
        "W_V": (h, d, dh),
        "b_Q": (h, dh),
        "b_K": (h, dh),
        "b_V": (h, dh),
        "W_O": (h, dh, d),
        "b_O": (d,),
    }
    mlp: dict[str, tuple[int, ...]] = {"W_in": (d, m), "b_in": (m,), "W_out": (m, d), "b_out": (d,)}
    ln = {"w": (d,), "b": (d,)}
    block = {"ln1": ln, "attn": attn, "ln2": ln, "mlp": mlp}
    return {
        "embed": {"W_E": (cfg.d_vocab, d)},
        "pos_embed": {"W_pos": (cfg.n_ctx, d)},
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
