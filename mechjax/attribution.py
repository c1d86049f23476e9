"""Attribution patching: AtP, AtP* (QK fix, GradDrop) and integrated gradients.

AtP (Nanda 2023; Kramár et al. 2024, "AtP*") estimates the effect of patching node n
from the source run into the base run by a first-order expansion at the base run:

    c(n) ~= (a_source(n) - a_base(n)) . dm/da(n) |_base

For every node site at once this takes one forward and one backward pass: zero deltas
are added at every site (`mechjax.add`) and `jax.grad` differentiates the metric with
respect to them. Scores are summed over the feature axis (d_model, d_head) and the batch
(the metric is a batch mean), so a score estimates the change of the metric that
`patching.patch_sweep` measures at that (layer, position[, head]).

- `mode="noise"` (AtP's convention): base = clean, source = corrupted.
  `mode="denoise"`: base = corrupted, source = clean (the sweep's default).
- AtP*'s QK fix (`atp_qk_fix`) recomputes the attention softmax exactly when one query
  or one key is patched, instead of linearising through it (saturated attention).
- GradDrop (`grad_drop=True`): for each layer l the gradient through layer l's
  attention and MLP outputs is stopped; c_GD(n) = 1/(L-1) sum_l |c_l(n)|.
- `integrated_gradients`: IG along the straight line corrupted -> clean at any site
  (the token embeddings = `hook_embed` for inputs), the interpolation steps `vmap`ped in
  chunks (`lax.map(..., batch_size=)`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from mechjax import sites as sites_mod
from mechjax.errors import InputError
from mechjax.interventions import Add, Apply, Patch
from mechjax.model import Model, run
from mechjax.patching.blocks import _check_pair, run_metric
from mechjax.patching.static import join_static, split_static

__all__ = ["atp", "atp_qk_fix", "integrated_gradients", "node_names"]

DEFAULT_KINDS = ("z", "mlp_out")


def node_names(model: Model, kinds: Sequence[str]) -> list[str]:
    """Full site names: a kind (`z`) expands to every layer; full names pass through."""
    out = []
    for k in kinds:
        if k in model.sites:
            out.append(k)
        else:
            out += [sites_mod.act_name(k, l) for l in range(model.config.n_layers)]
    sites_mod.check(out, model.sites)
    return out


def _reduce(name: str, x):
    """[batch, pos, (head,) d] -> [pos(, head)]; patterns [batch, head, q, k] -> [q, head]."""
    pos_axis, head_axis = sites_mod.axes(name)
    if pos_axis == 2:  # attention scores/pattern: sum over keys, order (q, head)
        return jnp.moveaxis(x.sum((0, 3)), 0, 1)
    return x.sum(axis=0).sum(axis=-1)


def _base_source(clean, corrupted, mode):
    if mode not in ("noise", "denoise"):
        raise InputError(f"mode {mode!r}; valid: 'noise', 'denoise'")
    return (clean, corrupted) if mode == "noise" else (corrupted, clean)


def _gate(g, x):
    """Identity forward; gradient scaled by g (g = 0 stops it)."""
    return g * x + (1 - g) * jax.lax.stop_gradient(x)


def atp(
    model: Model,
    clean,
    corrupted,
    metric: Callable,
    kinds: Sequence[str] = DEFAULT_KINDS,
    *,
    mode: str = "noise",
    grad_drop: bool = False,
    attention_mask=None,
) -> dict:
    """AtP scores at every site of `kinds`: {site name: [pos] or [pos, head]}.

    Args:
      kinds: site kinds (`z`, `mlp_out`, `resid_pre`, `attn_out`, `q`, `k`, `v`,
        `result`, ...) expanded over layers, or full site names.
      mode: "noise" (base = clean) or "denoise" (base = corrupted).
      grad_drop: AtP*'s GradDrop combination over layers (L backward passes, vmapped).
    """
    clean, corrupted = _check_pair(clean, corrupted)
    base, source = _base_source(clean, corrupted, mode)
    names = tuple(node_names(model, kinds))
    arrays, static = split_static(metric)
    out = _atp(
        model, base, source, attention_mask, arrays, static=static, names=names, grad_drop=grad_drop
    )
    return dict(zip(names, out))


# Up to this many tokens per run, the source run and the differentiated base run go
# through the model as one batch (see `_atp`).
JOINT_RUN_TOKENS = 256


@functools.partial(jax.jit, static_argnames=("static", "names", "grad_drop"))
def _atp(model, base, source, mask, arrays, *, static, names, grad_drop):
    """One forward of the source run (activations), one forward + backward of the base run.

    For small inputs the two forwards are one batch [source; base]: on CPU a forward over
    a few dozen tokens is bound by reading the weights, so two runs in one pass cost about
    one. Source rows never reach the metric (it reads the base rows), so their gradients
    are zero and the base rows' gradients are those of the separate runs.
    """
    metric = join_static(arrays, static)
    n = model.config.n_layers
    b = base.shape[0]
    joint = base.shape[0] * base.shape[1] <= JOINT_RUN_TOKENS
    if joint:
        tokens = jnp.concatenate([source, base])
        run_mask = None if mask is None else jnp.concatenate([mask, mask])
        rows = slice(b, None)
    else:
        src = run(model, source, capture=names, attention_mask=mask).cache
        tokens, run_mask, rows = base, mask, slice(None)

    def f(deltas, gates):
        hooks: dict[str, Any] = {k: Add(d) for k, d in zip(names, deltas)}
        for l in range(n):
            for kind in ("attn_out", "mlp_out"):
                name = sites_mod.act_name(kind, l)
                gate, prev = Apply(gates[l], _gate), hooks.get(name)
                hooks[name] = (gate,) if prev is None else (prev, gate)
        return run_metric(
            model, tokens, hooks, metric, capture=names, attention_mask=run_mask, rows=rows
        )

    shapes = jax.eval_shape(
        lambda: run(model, tokens, capture=names, attention_mask=run_mask).cache
    )
    zeros = [jnp.zeros(shapes[k].shape, shapes[k].dtype) for k in names]

    def scores(gates):
        grads, cache = jax.grad(f, has_aux=True)(zeros, gates)
        source_acts = {k: cache[k][:b] for k in names} if joint else src
        return [
            _reduce(k, (source_acts[k] - cache[k][rows]) * g[rows]) for k, g in zip(names, grads)
        ]

    if not grad_drop:
        return scores(jnp.ones(n))
    per_layer = jax.lax.map(scores, 1.0 - jnp.eye(n))
    return [jnp.abs(s).sum(0) / max(n - 1, 1) for s in per_layer]


# ------------------------------------------------------------------------- QK fix


def atp_qk_fix(
    model: Model, clean, corrupted, metric: Callable, *, mode: str = "noise", attention_mask=None
) -> dict:
    """AtP*'s QK fix: exact softmax for single patched queries and keys.

    Returns {"blocks.{l}.attn.hook_q": [pos, n_heads], "blocks.{l}.attn.hook_k":
    [pos, n_kv_heads]}: the estimated effect of patching one head's query (key) at one
    position, through the attention pattern only; the pattern's effect on the metric is
    still linearised (gradient at the pattern), the softmax is not. The queries and keys
    patched are the ones the scores read: after RoPE (`hook_rot_q/k`) in rotary
    families, `hook_q/k` otherwise (GPT-2). Attention-logit soft-capping is not
    supported (its scores are not a plain scaled product).
    """
    clean, corrupted = _check_pair(clean, corrupted)
    if getattr(model.config, "scale_attn_by_inverse_layer_idx", False):
        raise InputError("atp_qk_fix does not support scale_attn_by_inverse_layer_idx")
    if getattr(model.config, "attn_softcap", None) is not None:
        raise InputError(
            f"atp_qk_fix does not support the {model.family.name!r} family's attention-logit "
            "soft-capping: its scores are tanh-capped, not the plain scaled q.k the fix "
            "recomputes"
        )
    if sites_mod.act_name("pattern", 0) not in model.sites:
        raise InputError(f"the {model.family.name!r} family has no attention pattern site")
    base, source = _base_source(clean, corrupted, mode)
    arrays, static = split_static(metric)
    q, k = _qk_fix(model, base, source, attention_mask, arrays, static=static)
    n = model.config.n_layers
    out = {}
    for l in range(n):
        out[sites_mod.act_name("q", l)] = q[l]
        out[sites_mod.act_name("k", l)] = k[l]
    return out


def attn_scale(cfg) -> float:
    """The factor on q.k in the attention scores of a family's config."""
    scalar = getattr(cfg, "query_pre_attn_scalar", None)  # Gemma
    return float(scalar if scalar is not None else cfg.d_head) ** -0.5


@functools.partial(jax.jit, static_argnames=("static",))
def _qk_fix(model, base, source, mask, arrays, *, static):
    metric = join_static(arrays, static)
    cfg = model.config
    n = cfg.n_layers
    # the queries/keys the scores read: after RoPE where the family rotates, else q/k
    rotary = sites_mod.act_name("rot_q", 0) in model.sites
    rq = [sites_mod.act_name("rot_q" if rotary else "q", l) for l in range(n)]
    rk = [sites_mod.act_name("rot_k" if rotary else "k", l) for l in range(n)]
    pat = [sites_mod.act_name("pattern", l) for l in range(n)]
    sc = [sites_mod.act_name("attn_scores", l) for l in range(n)]
    src = run(model, source, capture=rq + rk, attention_mask=mask).cache
    shapes = jax.eval_shape(lambda: run(model, base, capture=pat).cache)

    def f(deltas):
        hooks = {p: Add(d) for p, d in zip(pat, deltas)}
        out = run(model, base, hooks, capture=rq + rk + pat + sc, attention_mask=mask)
        return metric(out.logits), out.cache

    grads, cache = jax.grad(f, has_aux=True)([jnp.zeros(shapes[p].shape) for p in pat])
    scale = attn_scale(cfg)
    qs, ks = [], []
    for l in range(n):
        g = grads[l]  # [b, h, t, s]
        p = cache[pat[l]]
        valid = cache[sc[l]] > jnp.finfo(p.dtype).min / 2  # the mask the forward applied
        a = cache[sc[l]]
        h, kvh = cache[rq[l]].shape[2], cache[rk[l]].shape[2]
        grp = h // kvh
        k_base = jnp.repeat(cache[rk[l]], grp, axis=2)
        k_src = jnp.repeat(src[rk[l]], grp, axis=2)
        # queries: row t recomputed with the source query
        a_q = jnp.einsum("bthd,bshd->bhts", src[rq[l]], k_base) * scale
        a_q = jnp.where(valid, a_q, -jnp.inf)
        dq = (jax.nn.softmax(a_q, -1) - p) * g
        qs.append(jnp.moveaxis(dq.sum((0, 3)), 0, 1))  # [t, h]
        # keys: column s of every row recomputed with the source key
        a_k = jnp.einsum("bthd,bshd->bhts", cache[rq[l]], k_src) * scale
        e = jnp.where(valid, jnp.exp(a_k - a), 1.0)  # exp(a' - a), 1 where masked
        r = 1.0 / (1.0 - p + p * e)  # Z / Z'
        G = (p * g).sum(-1, keepdims=True)  # sum_s' p g
        term = (r - 1.0) * (G - p * g) + (p * e * r - p) * g
        per_head = term.sum((0, 2))  # [h, s]
        ks.append(per_head.reshape(kvh, grp, -1).sum(1).T)  # [s, kv_head]
    return jnp.stack(qs), jnp.stack(ks)


# ------------------------------------------------------------------ integrated gradients


def integrated_gradients(
    model: Model,
    clean,
    corrupted,
    metric: Callable,
    site: str = "hook_embed",
    *,
    steps: int = 16,
    rule: str = "midpoint",
    chunk_size: int = 8,
    attention_mask=None,
) -> jax.Array:
    """Integrated gradients of the metric at `site` from the corrupted to the clean value.

    IG(x) = (x_clean - x_corr) . mean_k dm/dx at x_corr + alpha_k (x_clean - x_corr),
    the site replaced by the interpolation and everything downstream recomputed.
    Summed over the feature axis and the batch: `[pos]` or `[pos, head]`; with enough
    steps their total is m(clean) - m(corrupted) (completeness).

    Args:
      site: full site name (`hook_embed` for input attribution, `blocks.3.hook_resid_pre`,
        `blocks.2.attn.hook_z`, ...).
      rule: "left" (alpha = k/steps, k = 0..steps-1, as EAP-IG), "right" or "midpoint".
      chunk_size: interpolation steps run together in one vmapped batch.
    """
    clean, corrupted = _check_pair(clean, corrupted)
    sites_mod.check([site], model.sites)
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    offsets = {"left": 0.0, "right": 1.0, "midpoint": 0.5}
    if rule not in offsets:
        raise InputError(f"rule {rule!r}; valid: {sorted(offsets)}")
    alphas = (jnp.arange(steps) + offsets[rule]) / steps
    arrays, static = split_static(metric)
    return _ig(
        model,
        clean,
        corrupted,
        attention_mask,
        alphas,
        arrays,
        static=static,
        site=site,
        chunk=min(chunk_size, steps),
    )


@functools.partial(jax.jit, static_argnames=("static", "site", "chunk"))
def _ig(model, clean, corrupted, mask, alphas, arrays, *, static, site, chunk):
    metric = join_static(arrays, static)
    x1 = run(model, clean, capture=[site], attention_mask=mask).cache[site]
    x0 = run(model, corrupted, capture=[site], attention_mask=mask).cache[site]

    def f(x):
        return metric(run(model, clean, {site: Patch(x)}, attention_mask=mask).logits)

    grads = jax.lax.map(lambda a: jax.grad(f)(x0 + a * (x1 - x0)), alphas, batch_size=chunk)
    return _reduce(site, (x1 - x0) * grads.mean(0))
