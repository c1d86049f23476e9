"""Edge scores: EAP, EAP-IG (inputs and activations variants), exact edge patching.

With Delta z_u = z_u(corrupted) - z_u(clean) at every position:

- `eap`: s(u -> v) = sum_{batch,pos,d} Delta z_u . dm/d(in_v) on the clean run;
- `eap_ig(..., variant="inputs")`: the gradient averaged over k = 0..steps-1 with the
  input embeddings at e_corr + (k/steps)(e_clean - e_corr) (left Riemann sum: the
  corrupted endpoint included, the clean one not), everything else free;
- `eap_ig(..., variant="activations")`: for each node group (the input, each layer's
  heads, each MLP) and k = 1..steps, the group's output is replaced by
  (k/steps) clean + (1 - k/steps) corrupted (no gradient through it, as in EAP-IG) and
  the gradients at every input are averaged over all groups and steps;
- `exact_edge_scores`: m(clean with only edge u -> v corrupted) - m(clean).

The metric is a batch mean, so a score estimates the change of that mean (EAP-IG
additionally divides by the number of items, a constant factor). With
`Negate(LogitDiff(...))` the scores are EAP-IG's `loss=True` logit-difference scores.
With one step, `variant="inputs"` takes the gradient at the corrupted endpoint (the left
sum's only point), and `variant="activations"` is not EAP either: each run cuts the
gradient through the replaced group, as EAP-IG does.

With a post-attention norm (Gemma 3), Delta z of a head is the change of its result
before the norm, as in EAP-IG: the gradient scores of head sources leave out the norm's
Jacobian (a first-order approximation that ignores the norm), while
`exact_edge_scores` recomputes the norm and is exact. In a parallel block there is no
score from a layer's heads to its own MLP (not an edge, see `mechjax.circuits.graph`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mechjax.circuits.evaluation import _evaluate
from mechjax.circuits.graph import _in_sites, _out_sites, _prepare, _stack_nodes, graph_of
from mechjax.errors import InputError
from mechjax.interventions import Add, Apply
from mechjax.model import Model, run
from mechjax.patching import join_static, run_metric, split_static

__all__ = ["eap", "eap_ig", "exact_edge_scores"]


def _gated(g, x):
    """`value` where g = 1 (no gradient to x), x elsewhere (the (value, g) pair in `g`)."""
    value, on = g
    return on * value + (1 - on) * x


def eap(model: Model, clean, corrupted, metric: Callable, *, attention_mask=None):
    """EAP edge scores `[n_src, n_dst]` (0 where no edge) and the graph."""
    model, clean, corrupted = _prepare(model, clean, corrupted)
    graph = graph_of(model)
    arrays, static = split_static(metric)
    # the input node set to its clean value: the plain clean-run gradient
    scores = _eap_ig(
        model,
        clean,
        corrupted,
        attention_mask,
        jnp.ones(1),
        jnp.zeros(1, jnp.int32),
        arrays,
        static=static,
        chunk=1,
    )
    return jnp.where(graph.valid, scores, 0.0), graph


def eap_ig(
    model: Model,
    clean,
    corrupted,
    metric: Callable,
    *,
    steps: int = 5,
    variant: str = "inputs",
    chunk_size: int = 8,
    attention_mask=None,
):
    """EAP-IG edge scores `[n_src, n_dst]` and the graph (see the module docstring)."""
    if variant not in ("inputs", "activations"):
        raise InputError(f"variant {variant!r}; valid: 'inputs', 'activations'")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    model, clean, corrupted = _prepare(model, clean, corrupted)
    graph = graph_of(model)
    arrays, static = split_static(metric)
    n_groups = 1 + 2 * model.config.n_layers
    if variant == "inputs":  # k = 0..steps-1 on the input node
        alphas, groups = np.arange(steps) / steps, np.zeros(steps, np.int32)
    else:  # k = 1..steps on every node group
        alphas = np.tile(np.arange(1, steps + 1) / steps, n_groups)
        groups = np.repeat(np.arange(n_groups, dtype=np.int32), steps)
    scores = _eap_ig(
        model,
        clean,
        corrupted,
        attention_mask,
        jnp.asarray(alphas, jnp.float32),
        jnp.asarray(groups),
        arrays,
        static=static,
        chunk=chunk_size,
    )
    return jnp.where(graph.valid, scores, 0.0), graph


@functools.partial(jax.jit, static_argnames=("static", "chunk"))
def _eap_ig(model, clean, corrupted, mask, alphas, groups, arrays, *, static, chunk):
    """Mean over (alpha, group) runs of the input gradients, contracted with Delta z."""
    metric = join_static(arrays, static)
    n = model.config.n_layers
    outs, ins = _out_sites(n), _in_sites(n)
    c = run(model, clean, capture=outs, attention_mask=mask).cache
    k = run(model, corrupted, capture=outs, attention_mask=mask).cache
    delta = _stack_nodes(k, outs) - _stack_nodes(c, outs)
    shapes = jax.eval_shape(lambda: run(model, clean, capture=ins, attention_mask=mask).cache)
    zeros = [jnp.zeros(shapes[x].shape) for x in ins]

    def grads(alpha, group):
        """Input gradients with output group `group` (index into outs) interpolated."""

        def f(deltas):
            hooks: dict[str, Any] = {x: Add(d) for x, d in zip(ins, deltas)}
            for i, name in enumerate(outs):
                value = alpha * c[name] + (1 - alpha) * k[name]
                gate = Apply((value, (group == i).astype(value.dtype)), _gated)
                hooks[name] = (gate, hooks[name]) if name in hooks else gate
            return run_metric(model, clean, hooks, metric, attention_mask=mask)[0]

        return _stack_nodes(dict(zip(ins, jax.grad(f)(zeros))), ins)

    total = jax.lax.map(lambda e: grads(*e), (alphas, groups), batch_size=chunk).mean(0)
    return jnp.einsum("bpsd,bptd->st", delta, total)


def exact_edge_scores(model: Model, clean, corrupted, metric: Callable, *, attention_mask=None):
    """m(clean with only edge u -> v corrupted) - m(clean) for every edge `[n_src, n_dst]`."""
    model, clean, corrupted = _prepare(model, clean, corrupted)
    graph = graph_of(model)
    idx = np.argwhere(graph.valid)
    masks = np.ones((len(idx),) + graph.valid.shape, bool)
    masks[np.arange(len(idx)), idx[:, 0], idx[:, 1]] = False
    arrays, static = split_static(metric)
    vals = _evaluate(
        model,
        clean,
        corrupted,
        attention_mask,
        jnp.asarray(masks),
        jnp.asarray(graph.valid),
        arrays,
        static=static,
    )
    base = metric(run(model, clean, attention_mask=attention_mask).logits)
    scores = np.zeros(graph.valid.shape, np.float32)
    scores[idx[:, 0], idx[:, 1]] = np.asarray(vals - base)
    return jnp.asarray(scores), graph
