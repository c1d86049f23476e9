"""The node/edge graph of a model, EAP and EAP-IG edge scores, exact edge patching.

The graph is EAP-IG's (`hannamw/EAP-IG`, used by MIB, Mueller et al. 2025):

- source nodes (outputs): `input` (the embeddings, `blocks.0.hook_resid_pre`), every
  attention head `a{l}.h{h}` (its `attn.hook_result`) and every MLP `m{l}`
  (`hook_mlp_out`);
- destination nodes (inputs): each head's separate q, k and v input
  (`hook_q_input`/`k_input`/`v_input`), each MLP's input (`hook_mlp_in`) and the
  logits (the final `hook_resid_post`); grouped-query attention is ungrouped first
  (`ungroup_gqa`), so every query head has its own k and v inputs;
- an edge u -> v exists when u is computed before v reads the residual stream.

Scores, with Delta z_u = z_u(corrupted) - z_u(clean) at every position:

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

`evaluate_graph` runs the clean input with every edge outside a circuit carrying its
corrupted value (EAP-IG's `evaluate_graph`), and `faithfulness` gives MIB's CPR and CMD.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import sites as sites_mod
from mechjax.errors import InputError
from mechjax.interventions import Add, Apply
from mechjax.model import Model, run
from mechjax.patching import _check_pair, join_static, run_metric, split_static

__all__ = ["Graph", "MIB_FRACTIONS", "eap", "eap_ig", "evaluate_graph", "exact_edge_scores",
           "faithfulness", "graph_of", "ungroup_gqa"]

MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def ungroup_gqa(model: Model) -> Model:
    """The same function with one k/v head per query head (W_K, W_V repeated)."""
    cfg = model.config
    if getattr(cfg, "n_kv_heads", cfg.n_heads) == cfg.n_heads:
        return model
    g = cfg.n_heads // cfg.n_kv_heads
    blocks = []
    for b in model.params["blocks"]:
        attn = dict(b["attn"])
        for k in ("W_K", "W_V", "b_K", "b_V"):
            if k in attn:
                attn[k] = jnp.repeat(attn[k], g, axis=0)
        blocks.append({**b, "attn": attn})
    params = {**model.params, "blocks": blocks}
    return dataclasses.replace(model, params=params,
                               config=dataclasses.replace(cfg, n_kv_heads=cfg.n_heads))


class Graph(NamedTuple):
    """Node names and the edge mask `valid[src, dst]`."""

    src: tuple
    dst: tuple
    valid: np.ndarray

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    def edges(self, scores) -> list[tuple[str, str, float]]:
        """(src, dst, score) of every edge, in graph order."""
        s = np.asarray(scores)
        return [(self.src[i], self.dst[j], float(s[i, j])) for i, j in zip(*np.nonzero(self.valid))]


def graph_of(model: Model) -> Graph:
    """The EAP-IG graph of `model` (heads ungrouped)."""
    n, h = model.config.n_layers, model.config.n_heads
    src, src_layer = ["input"], [-1]
    dst, dst_layer = [], []
    for l in range(n):
        src += [f"a{l}.h{i}" for i in range(h)] + [f"m{l}"]
        src_layer += [l] * h + [l + 0.5]
        dst += [f"a{l}.h{i}<{s}>" for s in "qkv" for i in range(h)] + [f"m{l}"]
        dst_layer += [l] * (3 * h) + [l + 0.5]
    dst.append("logits")
    dst_layer.append(n)
    valid = np.asarray(src_layer)[:, None] < np.asarray(dst_layer)[None, :]
    return Graph(tuple(src), tuple(dst), valid)


# ------------------------------------------------------------------------------ sites


def _out_sites(n):
    return ["blocks.0.hook_resid_pre"] + [
        x for l in range(n) for x in (f"blocks.{l}.attn.hook_result", f"blocks.{l}.hook_mlp_out")]


def _in_sites(n):
    return [x for l in range(n) for x in (
        f"blocks.{l}.hook_q_input", f"blocks.{l}.hook_k_input", f"blocks.{l}.hook_v_input",
        f"blocks.{l}.hook_mlp_in")] + [f"blocks.{n - 1}.hook_resid_post"]


def _stack_nodes(cache, names):
    """Site activations -> [batch, pos, nodes, d_model] in graph order."""
    parts = [cache[k] if cache[k].ndim == 4 else cache[k][:, :, None] for k in names]
    return jnp.concatenate(parts, axis=2)


def _prepare(model, clean, corrupted):
    clean, corrupted = _check_pair(clean, corrupted)
    if "blocks.0.hook_q_input" not in model.sites:
        raise InputError(f"family {model.family.name!r} has no split q/k/v input sites")
    return ungroup_gqa(model), clean, corrupted


def _gated(g, x):
    """`value` where g = 1 (no gradient to x), x elsewhere (the (value, g) pair in `g`)."""
    value, on = g
    return on * value + (1 - on) * x


# ---------------------------------------------------------------------------- scores


def eap(model: Model, clean, corrupted, metric: Callable, *, attention_mask=None):
    """EAP edge scores `[n_src, n_dst]` (0 where no edge) and the graph."""
    model, clean, corrupted = _prepare(model, clean, corrupted)
    graph = graph_of(model)
    arrays, static = split_static(metric)
    # the input node set to its clean value: the plain clean-run gradient
    scores = _eap_ig(model, clean, corrupted, attention_mask, jnp.ones(1), jnp.zeros(1, jnp.int32),
                     arrays, static=static, chunk=1)
    return jnp.where(graph.valid, scores, 0.0), graph


def eap_ig(model: Model, clean, corrupted, metric: Callable, *, steps: int = 5,
           variant: str = "inputs", chunk_size: int = 8, attention_mask=None):
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
    scores = _eap_ig(model, clean, corrupted, attention_mask, jnp.asarray(alphas, jnp.float32),
                     jnp.asarray(groups), arrays, static=static, chunk=chunk_size)
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
            hooks = {x: Add(d) for x, d in zip(ins, deltas)}
            for i, name in enumerate(outs):
                value = alpha * c[name] + (1 - alpha) * k[name]
                gate = Apply((value, (group == i).astype(value.dtype)), _gated)
                hooks[name] = (gate, hooks[name]) if name in hooks else gate
            return run_metric(model, clean, hooks, metric, attention_mask=mask)[0]
        return _stack_nodes(dict(zip(ins, jax.grad(f)(zeros))), ins)

    total = jax.lax.map(lambda e: grads(*e), (alphas, groups), batch_size=chunk).mean(0)
    return jnp.einsum("bpsd,bptd->st", delta, total)


# ---------------------------------------------------------------------- graph forward


class _GraphHook:
    """Runs the clean input with edges outside the circuit carrying corrupted values.

    Each destination input gets the sum over its non-circuit edges u of
    z_u(corrupted) - z_u(this run), as EAP-IG's `evaluate_graph` does.
    """

    def __init__(self, n_layers, n_heads, corrupt, off):
        self.outs, self.ins = _out_sites(n_layers), _in_sites(n_layers)
        self.h = n_heads
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
        d = jnp.einsum("bpsd,st->bptd", self.corrupt[:, :, :k] - cur, self.off[:k, start:stop])
        return d if x.ndim == 4 else d[:, :, 0]

    def _columns(self, name):
        """(start, stop) of `name` in the destination order [q.., k.., v.., mlp] per layer."""
        info, h = sites_mod.parse(name), self.h
        if info.hook == "hook_resid_post":
            return self.off.shape[1] - 1, self.off.shape[1]
        base = info.layer * (3 * h + 1)
        if info.hook == "hook_mlp_in":
            return base + 3 * h, base + 3 * h + 1
        start = base + "qkv".index(info.hook[5]) * h
        return start, start + h


def _graph_metric(model, clean, corrupt, off, metric, mask):
    hook = _GraphHook(model.config.n_layers, model.config.n_heads, corrupt, off)
    return metric(model.forward(clean, hook=hook, attention_mask=mask))


def evaluate_graph(model: Model, clean, corrupted, metric: Callable, in_circuit, *,
                   attention_mask=None):
    """The metric with every edge outside `in_circuit` ([n_src, n_dst] bool) corrupted."""
    model, clean, corrupted = _prepare(model, clean, corrupted)
    arrays, static = split_static(metric)
    return _evaluate(model, clean, corrupted, attention_mask, jnp.asarray(in_circuit),
                     arrays, static=static)


@functools.partial(jax.jit, static_argnames=("static",))
def _evaluate(model, clean, corrupted, mask, in_circuit, arrays, *, static):
    metric = join_static(arrays, static)
    outs = _out_sites(model.config.n_layers)
    corrupt = _stack_nodes(run(model, corrupted, capture=outs, attention_mask=mask).cache, outs)
    off = 1.0 - in_circuit.astype(corrupt.dtype)
    if off.ndim == 2:
        return _graph_metric(model, clean, corrupt, off, metric, mask)
    return jax.lax.map(lambda o: _graph_metric(model, clean, corrupt, o, metric, mask), off,
                       batch_size=16)


def exact_edge_scores(model: Model, clean, corrupted, metric: Callable, *, attention_mask=None):
    """m(clean with only edge u -> v corrupted) - m(clean) for every edge `[n_src, n_dst]`."""
    model, clean, corrupted = _prepare(model, clean, corrupted)
    graph = graph_of(model)
    idx = np.argwhere(graph.valid)
    masks = np.ones((len(idx),) + graph.valid.shape, bool)
    masks[np.arange(len(idx)), idx[:, 0], idx[:, 1]] = False
    arrays, static = split_static(metric)
    vals = _evaluate(model, clean, corrupted, attention_mask, jnp.asarray(masks), arrays,
                     static=static)
    base = metric(run(model, clean, attention_mask=attention_mask).logits)
    scores = np.zeros(graph.valid.shape, np.float32)
    scores[idx[:, 0], idx[:, 1]] = np.asarray(vals - base)
    return jnp.asarray(scores), graph


def faithfulness(model: Model, clean, corrupted, metric: Callable, scores, graph: Graph, *,
                 fractions: Sequence[float] = MIB_FRACTIONS, absolute: bool = False,
                 attention_mask=None) -> dict:
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
    vals = np.asarray(evaluate_graph(model, clean, corrupted, metric, masks,
                                     attention_mask=attention_mask))
    empty, full = vals[-2], vals[-1]
    f = (vals[:-2] - empty) / (full - empty)
    width = np.diff(fr)
    cpr = float(np.sum(width * (f[1:] + f[:-1]) / 2))
    cmd = float(np.sum(width * (np.abs(1 - f[1:]) + np.abs(1 - f[:-1])) / 2))
    return {"fractions": fr, "f": f, "cpr": cpr, "cmd": cmd, "empty": float(empty),
            "full": float(full)}
