"""Circuit evaluation: the clean run with every edge outside a circuit corrupted
(EAP-IG's `evaluate_graph`), and MIB's faithfulness (CPR and CMD) over edge fractions.

Only edges of `graph_of(model)` carry corrupted values (in a parallel block a layer's
heads run before its MLP reads the block input, without an edge to it). With a
post-attention norm the layer's head results are mixed before the norm rather than
added after it, so a circuit's value is the patched model's, not an additive estimate.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import sites as sites_mod
from mechjax.circuits.graph import (
    Graph,
    _in_sites,
    _out_sites,
    _prepare,
    _stack_nodes,
    graph_of,
    post_attn_norm,
)
from mechjax.model import Model, run
from mechjax.patching import join_static, split_static

__all__ = ["MIB_FRACTIONS", "evaluate_graph", "faithfulness"]

MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class _GraphHook:
    """Runs the clean input with edges outside the circuit carrying corrupted values.

    Each destination input gets the sum over its non-circuit edges u of
    z_u(corrupted) - z_u(this run), as EAP-IG's `evaluate_graph` does. With a
    post-attention norm `post` (Gemma 3), a layer's heads are not additive: that layer's
    term is instead post(sum of its head results, each corrupted where its edge to this
    input is off) - post(sum of this run's head results), so corrupting every out-edge
    of a head equals patching its result.
    """

    def __init__(self, model, corrupt, off, post):
        n_layers = model.config.n_layers
        self.outs, self.ins = _out_sites(n_layers), _in_sites(n_layers)
        self.h = model.config.n_heads
        self.model, self.post = model, post
        self.corrupt, self.off = corrupt, off  # [b, p, n_src, d], [n_src, n_dst]
        self.seen: list = []

    def wants(self, name):
        return name in self.outs or name in self.ins

    def __call__(self, name, x):
        if name in self.ins and self.seen:
            x = x + self._delta(name, x)
        if name in self.outs:
            self.seen.append(x if x.ndim == 4 else x[:, :, None])
        return x

    def _delta(self, name, x):
        cur = jnp.concatenate(self.seen, 2)
        k = cur.shape[2]
        start, stop = self._columns(name)
        diff, off = self.corrupt[:, :, :k] - cur, self.off[:k, start:stop]
        if self.post is None:
            return self._shape(jnp.einsum("bpsd,st->bptd", diff, off), x)
        # the input and the MLPs stay additive; each seen layer's heads go through the norm
        h = self.h
        layers = [l for l in range(self.model.config.n_layers) if (l + 1) * (h + 1) <= k]
        additive = np.ones(k, bool)
        for l in layers:
            additive[1 + l * (h + 1) : 1 + l * (h + 1) + h] = False
        d = jnp.einsum("bpsd,st->bptd", diff, off * jnp.asarray(additive, off.dtype)[:, None])
        for l in layers:
            heads = slice(1 + l * (h + 1), 1 + l * (h + 1) + h)
            base = cur[:, :, heads].sum(2)  # this run's summed head results, before the norm
            mixed = base[:, :, None] + jnp.einsum("bpsd,st->bptd", diff[:, :, heads], off[heads])
            d = d + self.post(self.model, l, mixed) - self.post(self.model, l, base)[:, :, None]
        return self._shape(d, x)

    @staticmethod
    def _shape(d, x):
        """[b, p, t, d] -> the destination's shape (no head axis for MLP and logits)."""
        return d if x.ndim == 4 else d[:, :, 0]

    def _columns(self, name):
        """(start, stop) of `name` in the destination order [q.., k.., v.., mlp] per layer."""
        info, h = sites_mod.parse(name), self.h
        if info.hook == "hook_resid_post":
            return self.off.shape[1] - 1, self.off.shape[1]
        assert info.layer is not None  # every destination but the logits is in a block
        base = info.layer * (3 * h + 1)
        if info.hook == "hook_mlp_in":
            return base + 3 * h, base + 3 * h + 1
        start = base + "qkv".index(info.hook[5]) * h
        return start, start + h


def _graph_metric(model, clean, corrupt, off, metric, mask):
    hook = _GraphHook(model, corrupt, off, post_attn_norm(model))
    return metric(model.forward(clean, hook=hook, attention_mask=mask))


def evaluate_graph(
    model: Model, clean, corrupted, metric: Callable, in_circuit, *, attention_mask=None
):
    """The metric with every edge outside `in_circuit` ([n_src, n_dst] bool) corrupted.

    `in_circuit` may carry leading batch axes (one circuit each); entries outside the
    graph (`graph_of(model).valid`) are ignored.
    """
    model, clean, corrupted = _prepare(model, clean, corrupted)
    valid = jnp.asarray(graph_of(model).valid)
    arrays, static = split_static(metric)
    return _evaluate(
        model,
        clean,
        corrupted,
        attention_mask,
        jnp.asarray(in_circuit),
        valid,
        arrays,
        static=static,
    )


@functools.partial(jax.jit, static_argnames=("static",))
def _evaluate(model, clean, corrupted, mask, in_circuit, valid, arrays, *, static):
    metric = join_static(arrays, static)
    outs = _out_sites(model.config.n_layers)
    corrupt = _stack_nodes(run(model, corrupted, capture=outs, attention_mask=mask).cache, outs)
    # only edges of the graph carry corrupted values: in a parallel block a layer's heads
    # are computed before its MLP reads the block input, but have no edge to it
    off = (valid & ~in_circuit.astype(bool)).astype(corrupt.dtype)
    if off.ndim == 2:
        return _graph_metric(model, clean, corrupt, off, metric, mask)
    return jax.lax.map(
        lambda o: _graph_metric(model, clean, corrupt, o, metric, mask), off, batch_size=16
    )


def faithfulness(
    model: Model,
    clean,
    corrupted,
    metric: Callable,
    scores,
    graph: Graph,
    *,
    fractions: Sequence[float] = MIB_FRACTIONS,
    absolute: bool = False,
    attention_mask=None,
) -> dict:
    """MIB's circuit faithfulness: f(C_k) at each edge fraction k, CPR and CMD.

    f = (m(C_k) - m(empty)) / (m(full) - m(empty)); C_k = the top ceil(k * n_edges)
    edges by score (|score| if `absolute`, as for CMD); CPR and CMD are trapezoids on a
    linear axis over the fractions. (EAP-IG's pruning of dangling nodes is not applied.)
    """
    s = np.asarray(scores, np.float64)
    s = np.abs(s) if absolute else s
    idx = np.argwhere(graph.valid)
    order = np.argsort(-s[idx[:, 0], idx[:, 1]], kind="stable")
    fr = np.asarray(fractions, np.float64)
    masks = np.zeros((len(fr) + 2,) + graph.valid.shape, bool)
    for i, k in enumerate(fr):
        top = idx[order[: int(np.ceil(k * len(idx)))]]
        masks[i, top[:, 0], top[:, 1]] = True
    masks[-1] = graph.valid  # full model; masks[-2] = empty circuit
    vals = np.asarray(
        evaluate_graph(model, clean, corrupted, metric, masks, attention_mask=attention_mask)
    )
    empty, full = vals[-2], vals[-1]
    f = (vals[:-2] - empty) / (full - empty)
    width = np.diff(fr)
    cpr = float(np.sum(width * (f[1:] + f[:-1]) / 2))
    cmd = float(np.sum(width * (np.abs(1 - f[1:]) + np.abs(1 - f[:-1])) / 2))
    return {
        "fractions": fr,
        "f": f,
        "cpr": cpr,
        "cmd": cmd,
        "empty": float(empty),
        "full": float(full),
    }
