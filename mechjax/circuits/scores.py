"""Edge and node scores: EAP, EAP-IG (inputs and activations), clean-corrupted, exact.

With Delta z_u = a_u - z_u(clean) at every position, a_u the ablated output of source u
(the corrupted run's by default; its mean or zero, see `evaluation.ABLATIONS`):

- `eap`: s(u -> v) = sum_{batch,pos,d} Delta z_u . dm/d(in_v) on the clean run;
- `eap_ig(..., variant="inputs")`: the gradient averaged over k = 0..steps-1 with the
  input embeddings at e_corr + (k/steps)(e_clean - e_corr) (left Riemann sum: the
  corrupted endpoint included, the clean one not), everything else free;
- `eap_ig(..., variant="activations")`: for each node group (the input, each layer's
  heads, each MLP) and k = 1..steps, the group's output is replaced by
  (k/steps) clean + (1 - k/steps) a_u (no gradient through it, as in EAP-IG) and the
  gradients at every input are averaged over all groups and steps;
- `clean_corrupted`: the gradient averaged over the clean and the corrupted run;
- `exact_edge_scores`: m(clean with only edge u -> v ablated) - m(clean);
- `node_scores`: the same at the nodes' outputs (MIB's node level: Delta z_u . dm/dz_u,
  summed over d; the neuron level keeps d).

Score scale. The metric is a batch mean, so with `scale="mean"` (the default) a score
estimates the change of the mean metric over the pairs, whatever `batch_size`: the
per-batch scores are averaged with the batch sizes as weights. EAP-IG (`attribute`)
instead sums, over batches, the scores of the per-batch mean metric, and divides by the
number of items: with batches of B pairs its scores are mechjax's divided by B.
`scale="eap-ig"` returns that scale (sum over batches / number of pairs), for
comparing numbers with EAP-IG's or MIB's files; rankings and circuits do not change.
With `Negate(LogitDiff(...))` the scores are EAP-IG's `loss=True` logit-difference scores.

With a post-attention norm (Gemma 3), Delta z of a head is the change of its result
before the norm, as in EAP-IG: the gradient scores of head sources leave out the norm's
Jacobian (a first-order approximation that ignores the norm), while
`exact_edge_scores` recomputes the norm and is exact. In a parallel block there is no
score from a layer's heads to its own MLP (not an edge, see `mechjax.circuits.graph`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mechjax.circuits.evaluation import _check_ablation, ablated_outputs, evaluate_graph
from mechjax.circuits.graph import _in_sites, _out_sites, _prepare, _stack_nodes, graph_of
from mechjax.errors import InputError
from mechjax.interventions import Add, Apply
from mechjax.model import Model, run
from mechjax.patching import join_static, run_metric, split_static

__all__ = ["clean_corrupted", "eap", "eap_ig", "exact_edge_scores", "node_scores"]

SCALES = ("mean", "eap-ig")


def _gated(g, x):
    """`value` where g = 1 (no gradient to x), x elsewhere (the (value, g) pair in `g`)."""
    value, on = g
    return on * value + (1 - on) * x


def _batches(n: int, batch_size: int | None) -> list[slice]:
    if batch_size is None or batch_size >= n:
        return [slice(0, n)]
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    return [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _rows(arrays, n: int, sl: slice) -> list:
    """The metric's per-pair leaves (leading axis n) cut to the batch's rows."""
    return [a[sl] if a.ndim and a.shape[0] == n else a for a in arrays]


def _score(model, clean, corrupted, metric, mask, *, alphas, groups, ablation, at, level,
           chunk, batch_size, scale):  # fmt: skip
    """Run `_eap_ig` batch by batch and combine the batches at the asked scale."""
    if scale not in SCALES:
        raise InputError(f"scale {scale!r}; valid: {SCALES}")
    _check_ablation(ablation)
    arrays, static = split_static(metric)
    n = clean.shape[0]
    total = 0.0
    for sl in _batches(n, batch_size):
        m = None if mask is None else jnp.asarray(mask)[sl]
        s = _eap_ig(
            model, clean[sl], corrupted[sl], m, jnp.asarray(alphas, jnp.float32),
            jnp.asarray(groups, jnp.int32), _rows(arrays, n, sl), static=static, chunk=chunk,
            ablation=ablation, at=at, level=level,
        )  # fmt: skip
        total = total + s * ((sl.stop - sl.start) if scale == "mean" else 1.0)
    return total / n


def eap(
    model: Model,
    clean,
    corrupted,
    metric: Callable,
    *,
    ablation: str = "corrupted",
    batch_size: int | None = None,
    scale: str = "mean",
    attention_mask=None,
):
    """EAP edge scores `[n_src, n_dst]` (0 where no edge) and the graph."""
    model, clean, corrupted = _prepare(model, clean, corrupted)
    graph = graph_of(model)
    # the input node set to its clean value: the plain clean-run gradient
    scores = _score(
        model, clean, corrupted, metric, attention_mask, alphas=[1.0], groups=[0],
        ablation=ablation, at="inputs", level="edge", chunk=1, batch_size=batch_size,
        scale=scale,
    )  # fmt: skip
    return jnp.where(graph.valid, scores, 0.0), graph


def clean_corrupted(
    model: Model,
    clean,
    corrupted,
    metric: Callable,
    *,
    batch_size: int | None = None,
    scale: str = "mean",
    attention_mask=None,
):
    """EAP-IG's clean-corrupted scores (gradients at both endpoints averaged) and the graph."""
    model, clean, corrupted = _prepare(model, clean, corrupted)
    graph = graph_of(model)
    scores = _score(
        model, clean, corrupted, metric, attention_mask, alphas=[1.0, 0.0], groups=[0, 0],
        ablation="corrupted", at="inputs", level="edge", chunk=2, batch_size=batch_size,
        scale=scale,
    )  # fmt: skip
    return jnp.where(graph.valid, scores, 0.0), graph


def _ig_points(variant: str, steps: int, n_groups: int):
    if variant not in ("inputs", "activations"):
        raise InputError(f"variant {variant!r}; valid: 'inputs', 'activations'")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if variant == "inputs":  # k = 0..steps-1 on the input node
        return np.arange(steps) / steps, np.zeros(steps, np.int32)
    # k = 1..steps on every node group
    alphas = np.tile(np.arange(1, steps + 1) / steps, n_groups)
    return alphas, np.repeat(np.arange(n_groups, dtype=np.int32), steps)


def eap_ig(
    model: Model,
    clean,
    corrupted,
    metric: Callable,
    *,
    steps: int = 5,
    variant: str = "inputs",
    ablation: str = "corrupted",
    chunk_size: int = 8,
    batch_size: int | None = None,
    scale: str = "mean",
    attention_mask=None,
):
    """EAP-IG edge scores `[n_src, n_dst]` and the graph (see the module docstring).

    `ablation` other than "corrupted" needs `variant="activations"` (EAP-IG's rule: the
    inputs variant interpolates toward the corrupted prompt). `chunk_size` gradient runs
    share one vmapped step (the steps are scanned in chunks, so memory holds one chunk's
    gradients); `batch_size` pairs go through the model at once.
    """
    if variant == "inputs" and ablation != "corrupted":
        raise InputError(f"ablation {ablation!r} needs variant='activations'")
    model, clean, corrupted = _prepare(model, clean, corrupted)
    graph = graph_of(model)
    alphas, groups = _ig_points(variant, steps, 1 + 2 * model.config.n_layers)
    scores = _score(
        model, clean, corrupted, metric, attention_mask, alphas=alphas, groups=groups,
        ablation=ablation, at="inputs", level="edge", chunk=chunk_size,
        batch_size=batch_size, scale=scale,
    )  # fmt: skip
    return jnp.where(graph.valid, scores, 0.0), graph


def node_scores(
    model: Model,
    clean,
    corrupted,
    metric: Callable,
    *,
    method: str = "eap",
    level: str = "node",
    steps: int = 5,
    ablation: str = "corrupted",
    batch_size: int | None = None,
    scale: str = "mean",
    attention_mask=None,
):
    """Node scores `[n_src]` (level "node") or `[n_src, d_model]` ("neuron") and the graph.

    `method`: "eap" (the clean-run gradient at each node's output) or "eap-ig" (averaged
    over the input interpolation of `eap_ig`'s inputs variant). A node's score estimates
    the metric's change when its output (every out-edge) is ablated.
    """
    if level not in ("node", "neuron"):
        raise InputError(f"level {level!r}; valid: 'node', 'neuron'")
    if method not in ("eap", "eap-ig"):
        raise InputError(f"method {method!r}; valid: 'eap', 'eap-ig'")
    model, clean, corrupted = _prepare(model, clean, corrupted)
    graph = graph_of(model)
    if method == "eap":
        alphas, groups = np.ones(1), np.zeros(1, np.int32)
    else:
        if ablation != "corrupted":
            raise InputError(f"ablation {ablation!r} needs method='eap'")
        alphas, groups = _ig_points("inputs", steps, 1)
    scores = _score(
        model, clean, corrupted, metric, attention_mask, alphas=alphas, groups=groups,
        ablation=ablation, at="outputs", level=level, chunk=8, batch_size=batch_size,
        scale=scale,
    )  # fmt: skip
    return scores, graph


def _site_slices(n_layers: int, h: int) -> list[slice]:
    """Columns of each output site in the stacked source order."""
    out = [slice(0, 1)]
    for l in range(n_layers):
        start = 1 + l * (h + 1)
        out += [slice(start, start + h), slice(start + h, start + h + 1)]
    return out


@functools.partial(jax.jit, static_argnames=("static", "chunk", "ablation", "at", "level"))
def _eap_ig(model, clean, corrupted, mask, alphas, groups, arrays, *, static, chunk,
            ablation, at, level):  # fmt: skip
    """Mean over (alpha, group) runs of the gradients at the inputs (or the outputs),
    contracted with Delta z."""
    metric = join_static(arrays, static)
    n, h = model.config.n_layers, model.config.n_heads
    outs, ins = _out_sites(n), _in_sites(n)
    c = run(model, clean, capture=outs, attention_mask=mask).cache
    stacked = _stack_nodes(c, outs)
    if ablation == "corrupted":
        k = run(model, corrupted, capture=outs, attention_mask=mask).cache
        abl = _stack_nodes(k, outs)
    else:
        abl = jnp.broadcast_to(
            ablated_outputs(model, clean, corrupted, mask, ablation), stacked.shape
        )
    delta = abl - stacked
    # each output site's ablated value, in the site's own shape
    a = {x: abl[:, :, sl] if c[x].ndim == 4 else abl[:, :, sl][:, :, 0]
         for x, sl in zip(outs, _site_slices(n, h))}  # fmt: skip
    probes = outs if at == "outputs" else ins
    shapes = jax.eval_shape(lambda: run(model, clean, capture=probes, attention_mask=mask).cache)
    zeros = [jnp.zeros(shapes[x].shape) for x in probes]

    def grads(alpha, group):
        """Probe gradients with output group `group` (index into outs) interpolated."""

        def f(deltas):
            hooks: dict[str, Any] = {}
            for i, name in enumerate(outs):
                value = alpha * c[name] + (1 - alpha) * a[name]
                hooks[name] = Apply((value, (group == i).astype(value.dtype)), _gated)
            for x, d in zip(probes, deltas):
                hooks[x] = (hooks[x], Add(d)) if x in hooks else Add(d)
            return run_metric(model, clean, hooks, metric, attention_mask=mask)[0]

        return jax.grad(f)(zeros)

    def contract(g):
        """Scores of one chunk of gradient runs, site by site (no [b, p, n_dst, d] stack)."""
        if at == "outputs":
            g = _stack_nodes(dict(zip(probes, [x.sum(0) for x in g])), probes)
            per_dim = jnp.einsum("bpsd,bpsd->sd", delta, g)
            return per_dim if level == "neuron" else per_dim.sum(-1)
        cols = [jnp.einsum("bpsd,cbptd->st", delta, x if x.ndim == 5 else x[:, :, :, None])
                for x in g]  # fmt: skip
        return jnp.concatenate(cols, 1)

    pts = alphas.shape[0]
    cs = math.gcd(pts, chunk)
    body = lambda acc, ag: (acc + contract(jax.vmap(grads)(*ag)), None)  # noqa: E731
    shape = jax.eval_shape(lambda: contract(jax.vmap(grads)(alphas[:cs], groups[:cs]))).shape
    total, _ = jax.lax.scan(
        body, jnp.zeros(shape), (alphas.reshape(pts // cs, cs), groups.reshape(pts // cs, cs))
    )
    return total / pts


def exact_edge_scores(
    model: Model,
    clean,
    corrupted,
    metric: Callable,
    *,
    ablation: str = "corrupted",
    attention_mask=None,
):
    """m(clean with only edge u -> v ablated) - m(clean) for every edge `[n_src, n_dst]`."""
    _check_ablation(ablation)
    model, clean, corrupted = _prepare(model, clean, corrupted)
    graph = graph_of(model)
    idx = np.argwhere(graph.valid)
    masks = np.ones((len(idx) + 1,) + graph.valid.shape, bool)  # the last: the full circuit
    masks[np.arange(len(idx)), idx[:, 0], idx[:, 1]] = False
    vals = evaluate_graph(
        model, clean, corrupted, metric, masks, ablation=ablation, attention_mask=attention_mask
    )
    base = vals[-1]  # the clean run (tested equal to metric(run(model, clean).logits))
    vals = vals[:-1]
    scores = np.zeros(graph.valid.shape, np.float32)
    scores[idx[:, 0], idx[:, 1]] = np.asarray(vals - base)
    return jnp.asarray(scores), graph
