"""Weight processing: opt-in `params -> params` rewrites that keep a model's function.

TransformerLens applies these at load time by default (its `fold_ln`, `center_writing_weights`,
`center_unembed`, `fold_value_biases`); here they are plain functions a user calls, never a
loader default, and each says exactly what it preserves. They work on the TransformerLens
parameter layout every family shares (`blocks[l].ln1/attn/ln2/mlp`, `ln_final`, `unembed`)
and keep the pytree structure a family's forward reads, so the result runs with the same
`forward` and the same sites:

    model = model.replace(params=mj.weights.fold_layer_norm(model.params))

What each preserves (checked by tests/test_weights.py on Llama and GPT-NeoX models):

- `fold_layer_norm`: logits and the value of every site (to float rounding); the norm
  gains become 1 and biases 0, their effect now lives in the reading weights.
- `center_writing_weights` (LayerNorm models only): logits; the residual stream loses its
  mean over d_model (every reader removes it anyway).
- `center_unembed`: softmax probabilities (log-probs); each position's logits shift by
  their mean over the vocabulary.
- `fold_value_biases`: logits; `hook_v`/`hook_z` lose the bias, `b_O` gains it
  (attention patterns sum to 1, so a value bias is a constant write).

Norms with anything but a plain gain (Gemma's `1 + w`, sandwich norms) are refused.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from mechjax.errors import InputError

Params = dict[str, Any]

_BLOCK_KEYS = {"ln1", "attn", "ln2", "mlp"}


def _check_layout(params: Params, what: str) -> None:
    for l, block in enumerate(params["blocks"]):
        extra = set(block) - _BLOCK_KEYS
        if extra:
            raise InputError(
                f"{what}: block {l} has {sorted(extra)} besides ln1/attn/ln2/mlp; this "
                "family's norms are not supported by the generic rule"
            )


def _is_layer_norm(params: Params) -> bool:
    return "b" in params["ln_final"]


def _copy(params: Any) -> Any:
    """A copy of the nested dicts/lists (arrays are immutable and shared)."""
    if isinstance(params, dict):
        return {k: _copy(v) for k, v in params.items()}
    if isinstance(params, list):
        return [_copy(v) for v in params]
    return params


def _fold_into(ln: dict, layer: dict, names: list[tuple[str, str]], center: bool) -> None:
    """Fold a norm's gain `w` (and bias `b`) into the matrices `W` that read its output.

    `names` pairs each reading matrix (input axis = d_model, second to last for
    `[heads, d_model, d_head]`, first for `[d_model, d_mlp]`) with its bias name.
    """
    w, b = ln["w"], ln.get("b")
    for W_name, b_name in names:
        if W_name not in layer:
            continue
        W = layer[W_name]
        axis = W.ndim - 2
        shape = [1] * W.ndim
        shape[axis] = -1
        if b is not None:
            bias = jnp.tensordot(b, W, axes=([0], [axis]))  # [heads, d_head] or [d_mlp]
            layer[b_name] = layer.get(b_name, 0.0) + bias
        W = W * w.reshape(shape)
        if center:  # the normalised input has zero mean, so so can the reading weights
            W = W - W.mean(axis=axis, keepdims=True)
        layer[W_name] = W


def fold_layer_norm(params: Params, *, center_reading: bool = True) -> Params:
    """Fold every norm's gain (and LayerNorm bias) into the weights that read it.

    `ln1` into `W_Q/W_K/W_V` (biases `b_Q/b_K/b_V`), `ln2` into `W_in`/`W_gate`
    (`b_in`/`b_gate`; for a mixture of experts also the router `W_router` and every
    expert's), `ln_final` into `W_U` (`b_U`); the gains become ones and the biases
    zeros. For LayerNorm models, `center_reading` also centers the reading weights over
    d_model (the normalised input has zero mean, so this changes nothing).

    Preserves: logits and the value of every site (`ln*.hook_normalized` is taken before
    the gain; q/k/v and MLP pre-activations get the same values from the folded weights).
    """
    _check_layout(params, "fold_layer_norm")
    params = _copy(params)
    center = center_reading and _is_layer_norm(params)
    for block in params["blocks"]:
        _fold_into(
            block["ln1"], block["attn"], [("W_Q", "b_Q"), ("W_K", "b_K"), ("W_V", "b_V")], center
        )
        mlp = block["mlp"]
        reading = [("W_in", "b_in"), ("W_gate", "b_gate"), ("W_router", "b_router")]
        _fold_into(block["ln2"], mlp, reading, center)
        if "experts" in mlp:  # a mixture of experts: every expert reads ln2 too
            _fold_into(block["ln2"], mlp["experts"], reading[:2], center)
        for name in ("ln1", "ln2"):
            block[name] = _identity_norm(block[name])
    unembed = params["unembed"]
    _fold_into(params["ln_final"], unembed, [("W_U", "b_U")], center)
    params["ln_final"] = _identity_norm(params["ln_final"])
    return params


def _identity_norm(ln: dict) -> dict:
    out = {"w": jnp.ones_like(ln["w"])}
    if "b" in ln:
        out["b"] = jnp.zeros_like(ln["b"])
    return out


def center_writing_weights(params: Params) -> Params:
    """Subtract from every weight that writes to the residual stream its mean over d_model.

    `W_E`, `W_pos`, `W_O`, `b_O`, `W_out`, `b_out`. Only for LayerNorm models: every
    reader of the stream is then a LayerNorm, which removes the mean anyway.

    Preserves: logits. Refused for RMSNorm models (where the mean matters).
    """
    _check_layout(params, "center_writing_weights")
    if not _is_layer_norm(params):
        raise InputError(
            "center_writing_weights needs LayerNorm models (it relies on every reader "
            "removing the residual mean); this model uses RMSNorm, whose output depends on it"
        )
    params = _copy(params)

    def center(x):
        return x - x.mean(axis=-1, keepdims=True)

    params["embed"]["W_E"] = center(params["embed"]["W_E"])
    if "pos_embed" in params:
        params["pos_embed"]["W_pos"] = center(params["pos_embed"]["W_pos"])
    for block in params["blocks"]:
        for part, names in (("attn", ("W_O", "b_O")), ("mlp", ("W_out", "b_out"))):
            for n in names:
                if n in block[part]:
                    block[part][n] = center(block[part][n])
    return params


def center_unembed(params: Params) -> Params:
    """Subtract from `W_U` (and `b_U`) its mean over the vocabulary.

    Preserves: softmax probabilities (each position's logits shift by a constant, their
    mean over the vocabulary, which becomes 0).
    """
    params = _copy(params)
    u = params["unembed"]
    u["W_U"] = u["W_U"] - u["W_U"].mean(axis=-1, keepdims=True)
    if "b_U" in u:
        u["b_U"] = u["b_U"] - u["b_U"].mean()
    return params


def fold_value_biases(params: Params) -> Params:
    """Move each layer's value bias `b_V` into the output bias: `b_O += sum_h b_V[h] @ W_O[h]`.

    Every row of an attention pattern sums to 1, so a value bias adds the same vector at
    every position; with grouped-query attention, query head h reads value head
    `h // (n_heads / n_kv_heads)`. Preserves: logits (`hook_v` and `hook_z` change).
    """
    params = _copy(params)
    for block in params["blocks"]:
        a = block["attn"]
        if "b_V" not in a:
            continue
        groups = a["W_O"].shape[0] // a["b_V"].shape[0]
        b_V = jnp.repeat(a["b_V"], groups, axis=0)  # [n_heads, d_head]
        a["b_O"] = a.get("b_O", 0.0) + jnp.einsum("hd,hdm->m", b_V, a["W_O"])
        a["b_V"] = jnp.zeros_like(a["b_V"])
    return params
