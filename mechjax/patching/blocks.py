"""Running blocks from a cached residual stream: one block on a parameter slice, the
rest of the model from layer L, and metrics that unembed only the rows they read."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mechjax import metrics as metrics_mod
from mechjax import sites as sites_mod
from mechjax.errors import InputError
from mechjax.hooks import HookContext
from mechjax.interventions import Patch
from mechjax.model import Model, run


def _check_pair(clean, corrupted):
    clean, corrupted = jnp.asarray(clean), jnp.asarray(corrupted)
    if clean.ndim != 2 or corrupted.ndim != 2:
        raise InputError(
            f"clean and corrupted tokens must be [batch, pos], got shapes "
            f"{tuple(clean.shape)} and {tuple(corrupted.shape)}"
        )
    if clean.shape != corrupted.shape:
        raise InputError(
            f"clean and corrupted tokens must have the same shape to be patched position by "
            f"position, got {tuple(clean.shape)} (clean) and {tuple(corrupted.shape)} "
            "(corrupted); pad or pick equal-length pairs"
        )
    return clean, corrupted


def _indexable_blocks(model: Model) -> bool:
    """True if a block can run as "layer 0" given its own index (`_block(..., layer=)`):
    false for GPT-2's `scale_attn_by_inverse_layer_idx`, whose code reads the index."""
    return not getattr(model.config, "scale_attn_by_inverse_layer_idx", False)


def _layer_invariant(model: Model) -> bool:
    """True if every block runs the same code whatever its index (so one traced layer
    body serves all of them): no index-dependent code, and one layer type throughout
    (Gemma 3 interleaves sliding-window layers, local RoPE, with global ones)."""
    types = getattr(model.config, "layer_types", None)
    return _indexable_blocks(model) and (not types or len(set(types)) == 1)


def _layer_config(cfg, layer: int | None):
    """`cfg` with layer 0 made to act as `layer` (its layer type), for one-block runs."""
    types = getattr(cfg, "layer_types", None)
    if layer is None or not types or types[0] == types[layer]:
        return cfg
    return dataclasses.replace(cfg, layer_types=(types[layer],) + tuple(types[1:]))


def _block(
    model: Model,
    block_params,
    resid,
    tokens,
    attention_mask,
    hooks=None,
    capture=(),
    layer: int | None = None,
):
    """One block of the family's forward, from `resid` (its resid_pre) to its resid_post.

    `hooks` and `capture` use layer-0 site names (`blocks.0.attn.hook_z`). `layer`: the
    block's index in the model, for families whose layers differ in type (required
    there: without it the block runs as layer 0, e.g. Gemma 3's sliding-window RoPE).
    """
    params = {**model.params, "blocks": [block_params]}
    ivs: dict[str, tuple] = {"blocks.0.hook_resid_pre": (Patch(resid),)}
    for site, iv in (hooks or {}).items():
        ivs[site] = ivs.get(site, ()) + tuple(iv if isinstance(iv, (list, tuple)) else (iv,))
    ctx = HookContext(ivs, ("blocks.0.hook_resid_post", *capture))
    model.family.forward(
        params, tokens, _layer_config(model.config, layer), hook=ctx, attention_mask=attention_mask
    )
    return ctx.cache["blocks.0.hook_resid_post"], ctx.cache


def _unembed(model: Model, resid, tokens, attention_mask):
    """Final norm and unembedding of a last-layer residual stream."""
    params = {**model.params, "blocks": []}
    ivs = {"hook_embed": (Patch(resid),)}
    if "hook_pos_embed" in model.sites:
        ivs["hook_pos_embed"] = (Patch(jnp.zeros((), resid.dtype)),)
    ctx = HookContext(ivs)
    return model.family.forward(
        params, tokens, model.config, hook=ctx, attention_mask=attention_mask
    )


def metric_of_final(model: Model, resid, tokens, attention_mask, metric):
    """metric(logits) from the last layer's resid_post, unembedding only the rows it reads.

    For the metric pytrees of `mechjax.metrics` (see `metrics.narrow`) only one position
    per batch row is unembedded; any other callable gets the full logits.
    """
    narrowed = metrics_mod.narrow(metric, tokens.shape[1])
    if narrowed is None:
        return metric(_unembed(model, resid, tokens, attention_mask))
    pos, one = narrowed
    rows = jnp.broadcast_to(pos, tokens.shape[:1])[:, None]
    resid = jnp.take_along_axis(resid, rows[:, :, None], axis=1)
    tokens = jnp.take_along_axis(tokens, rows, axis=1)
    mask = None if attention_mask is None else jnp.take_along_axis(attention_mask, rows, axis=1)
    return one(_unembed(model, resid, tokens, mask))


def run_metric(
    model: Model, tokens, hooks, metric, *, capture=(), attention_mask=None, rows=slice(None)
):
    """(metric of the logits of `tokens[rows]`, cache of `capture`) for a hooked run.

    Like `metric(run(...).logits[rows])`, but the unembedding is only done where the
    metric reads (`metric_of_final`): XLA does not drop the unused logits of a full
    [batch, pos, d_vocab] matmul by itself.
    """
    final = sites_mod.act_name("resid_post", model.config.n_layers - 1)
    sites = model.sites
    after = set(sites[sites.index(final) + 1 :]) if final in sites else set()
    if final not in sites or after & (set(hooks or ()) | set(capture)):
        # no final residual site, or hooks/captures on the final norm: full logits
        out = run(model, tokens, hooks, capture=capture, attention_mask=attention_mask)
        return metric(out.logits[rows]), out.cache
    out = run(
        model,
        tokens,
        hooks,
        capture=tuple(dict.fromkeys((*capture, final))),
        attention_mask=attention_mask,
    )
    mask = None if attention_mask is None else attention_mask[rows]
    value = metric_of_final(model, out.cache[final][rows], tokens[rows], mask, metric)
    return value, {k: out.cache[k] for k in capture}


def _stack_blocks(model: Model):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *model.params["blocks"])


def run_from_layer(
    model: Model,
    layer,
    resid,
    tokens,
    *,
    attention_mask=None,
    hooks=None,
    stacked=None,
    metric=None,
):
    """Logits of the model run from `resid` = resid_pre of `layer` (may be traced).

    `hooks` (layer-0 site names) apply to `layer` only; later layers run plainly. With
    `metric`, returns `metric(logits)` instead, unembedding only the positions it reads
    (`metric_of_final`).
    """
    if not _layer_invariant(model):
        raise InputError(
            f"run_from_layer traces one layer body for every layer; the {model.family.name!r} "
            "family's layers differ (layer types or index-dependent code): use "
            "`run(model, tokens, hooks={act_name('resid_pre', layer): patch(resid)})`"
        )
    stacked = _stack_blocks(model) if stacked is None else stacked
    n = model.config.n_layers
    take = lambda l: jax.tree.map(lambda x: x[l], stacked)  # noqa: E731
    resid, _ = _block(model, take(layer), resid, tokens, attention_mask, hooks)
    step = lambda l, r: _block(model, take(l), r, tokens, attention_mask)[0]  # noqa: E731
    resid = jax.lax.fori_loop(layer + 1, n, step, resid)
    if metric is not None:
        return metric_of_final(model, resid, tokens, attention_mask, metric)
    return _unembed(model, resid, tokens, attention_mask)
