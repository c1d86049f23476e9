"""Analyses of a run's captured activations: the ActivationCache utilities of TransformerLens.

Every function reads a `cache` (the dict of `mj.run_with_cache(...).cache`; its default
capture holds every site used here) and the model's weights, and returns arrays or a
`Stack`: values with a leading component axis and one label per component.

- the residual stream as a stack: accumulated (`accumulated_resid`: the stream before
  each layer, the logit-lens view) or decomposed (`decompose_resid`: embeddings plus each
  layer's attention and MLP output; the pieces sum to the stream), per-head results
  (`stack_head_results`, from `hook_z` and `W_O`) and per-neuron results;
- the final norm applied to a stack (`apply_final_norm`), either each element with its own
  scale (logit lens) or with the scale frozen from a run's `ln_final.hook_scale`: the
  norm is then linear, so the pieces of a decomposition stay additive, as direct logit
  attribution and the entropy-neuron analysis need (Stolfo et al. 2024);
- the logit lens (nostalgebraist 2020): `logit_lens`;
- direct logit attribution (Elhage et al. 2021; Wang et al. 2022) of any stack, of heads
  and of neurons, for a token or a logit difference, plain or centered;
- attention patterns per head: `stack_attention_patterns`.

Identities the tests check (float32, to 1e-4): the components of `decompose_resid` and of
`components` sum to the final residual stream; the attributions of `components` (with the
frozen scale, plus the `bias` row) sum to the logit, or with `centered=True` to the logit
minus its mean over the vocabulary. Norms: RMSNorm and LayerNorm with a plain gain `w`
(Llama, GPT-2, GPT-NeoX) and Gemma's RMSNorm with gain `1 + w` (`norm_gain`); a family
with another final norm needs its own rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mechjax.errors import InputError, SiteError
from mechjax.model import Model

Array = jax.Array


class Stack(NamedTuple):
    """Components along axis 0 of `values`, named by `labels` (`L3H2`, `2_mlp_out`, ...)."""

    values: Array
    labels: list[str]


def _get(cache: dict, name: str) -> Array:
    if name not in cache:
        raise SiteError(
            f"the cache has no {name!r}; capture it (mj.run_with_cache captures every site "
            "but the per-head results and split inputs by default)"
        )
    return cache[name]


def _layers(model: Model, layer: int | None) -> int:
    n = model.config.n_layers
    if layer is None:
        return n
    if not 0 <= layer <= n:
        raise InputError(f"layer={layer} is out of range; valid: 0..{n} (or None for all)")
    return layer


def _is_layer_norm(model: Model) -> bool:
    return "b" in model.params["ln_final"]


# Families whose stored norm weights are offsets from 1 (the applied gain is 1 + w).
_GAIN_OFFSET = {"gemma2": 1.0, "gemma3": 1.0}


def norm_gain(model: Model, norm: dict) -> Array:
    """The gain a norm of `model` applies: its weight `w`, or `1 + w` for Gemma, whose
    checkpoints store offsets from 1 (`models.gemma3`)."""
    return norm["w"] + _GAIN_OFFSET.get(model.family.name, 0.0)


def final_gain(model: Model) -> Array:
    """The final norm's gain [d_model] (`norm_gain` of `ln_final`)."""
    return norm_gain(model, model.params["ln_final"])


# ---------------------------------------------------------------------------- stacks


def accumulated_resid(
    cache: dict, model: Model, layer: int | None = None, *, incl_mid: bool = False
) -> Stack:
    """The residual stream before each layer `< layer`, then the stream entering `layer`.

    `layer=None`: `resid_pre` of every layer and the final `resid_post` (n_layers + 1
    entries, `[n, batch, pos, d_model]`). `incl_mid` adds each `resid_mid` (sequential
    blocks only).
    """
    n = _layers(model, layer)
    vals, labels = [], []
    for l in range(n):
        vals.append(_get(cache, f"blocks.{l}.hook_resid_pre"))
        labels.append(f"{l}_pre")
        if incl_mid:
            vals.append(_get(cache, f"blocks.{l}.hook_resid_mid"))
            labels.append(f"{l}_mid")
    last = model.config.n_layers
    if n == last:
        vals.append(_get(cache, f"blocks.{last - 1}.hook_resid_post"))
        labels.append("final_post")
    else:
        vals.append(_get(cache, f"blocks.{n}.hook_resid_pre"))
        labels.append(f"{n}_pre")
    return Stack(jnp.stack(vals), labels)


def _embeds(cache: dict) -> tuple[list[Array], list[str]]:
    vals, labels = [_get(cache, "hook_embed")], ["embed"]
    if "hook_pos_embed" in cache:
        vals.append(cache["hook_pos_embed"])
        labels.append("pos_embed")
    return vals, labels


def decompose_resid(
    cache: dict, model: Model, layer: int | None = None, *, mode: str = "all"
) -> Stack:
    """The residual stream entering `layer` (None: the final stream) as a sum of pieces.

    Pieces: `embed` (and `pos_embed`), then each layer's `attn_out` and/or `mlp_out`
    (`mode` "all", "attn" or "mlp"). With `mode="all"` the pieces sum to the stream.
    """
    if mode not in ("all", "attn", "mlp"):
        raise InputError(f"mode={mode!r}; valid: 'all', 'attn', 'mlp'")
    vals, labels = _embeds(cache)
    for l in range(_layers(model, layer)):
        if mode in ("all", "attn"):
            vals.append(_get(cache, f"blocks.{l}.hook_attn_out"))
            labels.append(f"{l}_attn_out")
        if mode in ("all", "mlp"):
            vals.append(_get(cache, f"blocks.{l}.hook_mlp_out"))
            labels.append(f"{l}_mlp_out")
    return Stack(jnp.stack(vals), labels)


def _head_results(cache: dict, model: Model, l: int) -> Array:
    """[n_heads, batch, pos, d_model] per-head writes of layer l (b_O excluded)."""
    z = _get(cache, f"blocks.{l}.attn.hook_z")
    return jnp.einsum("bphd,hdm->hbpm", z, model.params["blocks"][l]["attn"]["W_O"])


def stack_head_results(cache: dict, model: Model, layer: int | None = None) -> Stack:
    """Each head's output `z_h @ W_O[h]` for layers `< layer`: `[n_layers * n_heads, ...]`.

    Computed from `hook_z` (no need to capture `hook_result`); the output bias `b_O` is
    not any head's and is left out (see `components`).
    """
    vals, labels = [], []
    for l in range(_layers(model, layer)):
        r = _head_results(cache, model, l)
        vals.append(r)
        labels += [f"L{l}H{h}" for h in range(r.shape[0])]
    if not vals:
        raise InputError("no layers selected (layer=0)")
    return Stack(jnp.concatenate(vals), labels)


def stack_neuron_results(
    cache: dict, model: Model, layer: int, neurons: Sequence[int] | None = None
) -> Stack:
    """Each MLP neuron's write `post[n] * W_out[n]` in `layer`: `[n_neurons, batch, pos, d_model]`.

    Memory grows with d_mlp * d_model per position; pass `neurons` to keep a few, or use
    `neuron_attribution` for logit effects.
    """
    post = _get(cache, f"blocks.{layer}.mlp.hook_post")
    W_out = model.params["blocks"][layer]["mlp"]["W_out"]
    ids = list(range(W_out.shape[0])) if neurons is None else [int(n) for n in neurons]
    idx = jnp.asarray(ids, jnp.int32)
    vals = jnp.einsum("bpn,nm->nbpm", post[..., idx], W_out[idx])
    return Stack(vals, [f"L{layer}N{n}" for n in ids])


def components(cache: dict, model: Model, *, heads: bool = True) -> Stack:
    """Every additive piece of the final residual stream; they sum to it exactly.

    `embed` (`pos_embed`), then per layer: each head (`L{l}H{h}`) and the attention output
    bias (`{l}_attn_bias`, if the model has one), or with `heads=False` the whole
    `{l}_attn_out`; then `{l}_mlp_out`.
    """
    vals, labels = _embeds(cache)
    vals = [v[None] for v in vals]
    for l in range(model.config.n_layers):
        if heads:
            r = _head_results(cache, model, l)
            vals.append(r)
            labels += [f"L{l}H{h}" for h in range(r.shape[0])]
            b_O = model.params["blocks"][l]["attn"].get("b_O")
            if b_O is not None:
                vals.append(jnp.broadcast_to(b_O, r.shape[1:])[None])
                labels.append(f"{l}_attn_bias")
        else:
            vals.append(_get(cache, f"blocks.{l}.hook_attn_out")[None])
            labels.append(f"{l}_attn_out")
        vals.append(_get(cache, f"blocks.{l}.hook_mlp_out")[None])
        labels.append(f"{l}_mlp_out")
    return Stack(jnp.concatenate(vals), labels)


def stack_attention_patterns(
    cache: dict, model: Model, layers: Sequence[int] | None = None
) -> Stack:
    """Attention pattern of each head: `[n_selected_heads, batch, query_pos, key_pos]`."""
    layers = range(model.config.n_layers) if layers is None else layers
    vals, labels = [], []
    for l in layers:
        p = _get(cache, f"blocks.{l}.attn.hook_pattern")  # [batch, n_heads, q, k]
        vals.append(jnp.moveaxis(p, 1, 0))
        labels += [f"L{l}H{h}" for h in range(p.shape[1])]
    return Stack(jnp.concatenate(vals), labels)


# ---------------------------------------------------------------------- final norm


def final_scale(cache: dict) -> Array:
    """The run's final-norm scale `[batch, pos, 1]` (`ln_final.hook_scale`)."""
    return _get(cache, "ln_final.hook_scale")


def apply_final_norm(stack: Array, model: Model, scale: Array | None = None) -> Array:
    """The final norm (without its bias) applied to each element of `stack` [..., d_model].

    With `scale` (e.g. `final_scale(cache)`, broadcast against `stack`'s trailing axes),
    the norm is frozen to that run: a linear map, so a decomposition stays additive and
    `sum(apply_final_norm(pieces, model, scale)) + b == ln_final(resid)`. Without it, each
    element is normalised by its own scale (the logit lens). LayerNorm also centers each
    element; its bias `b` is left out (add it once, not per piece).
    """
    x = stack
    if _is_layer_norm(model):
        x = x - jnp.mean(x, axis=-1, keepdims=True)
    if scale is None:
        scale = jnp.sqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + model.config.eps)
    return x / scale * final_gain(model)


def logit_lens(
    cache: dict, model: Model, *, incl_mid: bool = False, frozen_scale: bool = False
) -> Stack:
    """Logits `[n_layers + 1, batch, pos, d_vocab]` read from the stream before each layer.

    The final norm is applied to each layer's stream with its own scale (default) or with
    the final scale of the run (`frozen_scale=True`); the last entry equals the logits.
    """
    acc = accumulated_resid(cache, model, incl_mid=incl_mid)
    x = apply_final_norm(acc.values, model, final_scale(cache) if frozen_scale else None)
    logits = x @ model.params["unembed"]["W_U"] + _logit_bias(model)
    return Stack(logits, acc.labels)


def _logit_bias(model: Model) -> Array:
    """The per-token constant of the logits: `b_ln @ W_U + b_U` (0 for RMSNorm, no b_U)."""
    W_U = model.params["unembed"]["W_U"]
    bias = jnp.zeros(W_U.shape[1], W_U.dtype)
    if _is_layer_norm(model):
        bias = bias + model.params["ln_final"]["b"] @ W_U
    if "b_U" in model.params["unembed"]:
        bias = bias + model.params["unembed"]["b_U"]
    return bias


# --------------------------------------------------------------- logit attribution


class _Readout(NamedTuple):
    direction: Array  # [batch, pos, d_model]: a residual piece's attribution is piece . direction
    bias: Array  # [batch, pos]: the constant part of the logit (difference)


def _readout(model: Model, scale: Array, tokens, incorrect_tokens, centered: bool) -> _Readout:
    """The linear readout of logit[tokens] (- logit[incorrect]) under the frozen final norm."""
    W_U = model.params["unembed"]["W_U"]
    bias_row = _logit_bias(model)
    if centered:
        W_U = W_U - W_U.mean(axis=1, keepdims=True)
        bias_row = bias_row - bias_row.mean()
    tokens = jnp.asarray(tokens)
    d = jnp.moveaxis(W_U[:, tokens], 0, -1)  # [..., d_model]
    c = bias_row[tokens]
    if incorrect_tokens is not None:
        inc = jnp.asarray(incorrect_tokens)
        d = d - jnp.moveaxis(W_U[:, inc], 0, -1)
        c = c - bias_row[inc]
    # piece . (w * d) / scale, centered for LayerNorm (centering a piece == centering d)
    e = d * final_gain(model)
    if _is_layer_norm(model):
        e = e - jnp.mean(e, axis=-1, keepdims=True)
    e = e / scale
    return _Readout(e, jnp.broadcast_to(c, e.shape[:-1]))


def logit_attribution(
    stack: Stack | Array,
    model: Model,
    cache: dict,
    tokens,
    incorrect_tokens=None,
    *,
    centered: bool = False,
    include_bias: bool = True,
    scale: Array | None = None,
) -> Stack:
    """Direct logit attribution of each piece of a stack: `[n (+1), batch, pos]`.

    Each piece goes through the final norm frozen to the run's scale and is read out
    along the unembedding of `tokens` (minus that of `incorrect_tokens`, for a logit
    difference). `tokens` broadcasts to `[batch, pos]`: the token whose logit is
    explained at each position (e.g. the next token).

    With `include_bias`, a last row `bias` holds the constant part (`b_ln @ W_U + b_U`),
    so for `components(...)` the rows sum to the logit (difference) exactly. With
    `centered`, the readout is the logit minus its mean over the vocabulary (TransformerLens's
    centered unembedding), which removes the part every token gets.
    """
    labels = stack.labels if isinstance(stack, Stack) else [str(i) for i in range(len(stack))]
    values = stack.values if isinstance(stack, Stack) else stack
    r = _readout(
        model, final_scale(cache) if scale is None else scale, tokens, incorrect_tokens, centered
    )
    attrs = jnp.einsum("nbpm,bpm->nbp", values, r.direction)
    if include_bias:
        attrs = jnp.concatenate([attrs, r.bias[None]])
        labels = [*labels, "bias"]
    return Stack(attrs, labels)


def head_attribution(
    cache: dict, model: Model, tokens, incorrect_tokens=None, *, centered: bool = False
) -> Array:
    """Direct logit attribution of every head: `[n_layers, n_heads, batch, pos]`."""
    r = _readout(model, final_scale(cache), tokens, incorrect_tokens, centered)
    return jnp.stack(
        [
            jnp.einsum(
                "bphd,hdm,bpm->hbp",
                _get(cache, f"blocks.{l}.attn.hook_z"),
                model.params["blocks"][l]["attn"]["W_O"],
                r.direction,
            )
            for l in range(model.config.n_layers)
        ]
    )


def neuron_attribution(
    cache: dict, model: Model, layer: int, tokens, incorrect_tokens=None, *, centered: bool = False
) -> Array:
    """Direct logit attribution of each MLP neuron of `layer`: `[batch, pos, d_mlp]`.

    Summed over neurons and added to the attribution of `b_out`, it gives that of the
    layer's `mlp_out`.
    """
    r = _readout(model, final_scale(cache), tokens, incorrect_tokens, centered)
    post = _get(cache, f"blocks.{layer}.mlp.hook_post")
    W_out = model.params["blocks"][layer]["mlp"]["W_out"]
    return post * jnp.einsum("nm,bpm->bpn", W_out, r.direction)
