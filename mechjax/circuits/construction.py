"""Circuits from scores, as EAP-IG and MIB build them: top-n, greedy, node and neuron
level, pruning and the weighted edge count.

- `top_n(scores, graph, n)`: the n best edges (`absolute`: by |score|, MIB's CMD ranking;
  signed for CPR), ties broken by graph order;
- `greedy(scores, graph, n)`: EAP-IG's `apply_greedy`: grow from the logits, each step
  adding the best edge into a node already in the circuit (MIB evaluates information
  flow routes this way);
- `node_circuit(node_scores, graph, n)`: the n best source nodes (heads, MLPs, the
  input) with every edge out of them; `neuron_circuit`: the n best (node, dimension)
  pairs, every edge out of a node with any dimension kept;
- `prune(edges, graph)`: EAP-IG's `prune`: remove nodes without an in- or an out-edge
  (the input always has its input, the logits are always in), then the edges whose
  parent or child went, until nothing changes;
- `circuits_at(scores, graph, fractions)`: MIB's circuits, `int(k * n_edges)` edges at
  each fraction k, pruned;
- `weighted_edge_count(edges, neurons)`: edges weighted by the fraction of the source's
  dimensions kept (EAP-IG's `weighted_edge_count`; the plain count without neurons).

Everything here is host-side numpy over `[n_src, n_dst]` boolean masks.
"""

from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np

from mechjax.circuits.graph import Graph
from mechjax.errors import InputError

__all__ = [
    "circuits_at",
    "greedy",
    "neuron_circuit",
    "node_circuit",
    "node_of_dst",
    "prune",
    "top_n",
    "weighted_edge_count",
]


def _check_n(n: int, total: int, what: str = "edges") -> int:
    n = int(n)
    if not 0 <= n <= total:
        raise InputError(f"asked for {n} {what}; the graph has {total} (valid: 0..{total})")
    return n


def _ranked(scores, graph: Graph, absolute: bool) -> np.ndarray:
    """Edge indices [e, 2] (src, dst), best first; ties in graph order."""
    s = np.asarray(scores, np.float64)
    if s.shape != graph.valid.shape:
        raise InputError(f"scores have shape {s.shape}; the graph's is {graph.valid.shape}")
    s = np.abs(s) if absolute else s
    idx = np.argwhere(graph.valid)
    return idx[np.argsort(-s[idx[:, 0], idx[:, 1]], kind="stable")]


def top_n(scores, graph: Graph, n: int, *, absolute: bool = True) -> np.ndarray:
    """The n edges of highest score (|score| if `absolute`), [n_src, n_dst] bool."""
    n = _check_n(n, graph.n_edges)
    out = np.zeros(graph.valid.shape, bool)
    top = _ranked(scores, graph, absolute)[:n]
    out[top[:, 0], top[:, 1]] = True
    return out


def node_of_dst(graph: Graph) -> np.ndarray:
    """[n_dst] the source index of each destination's node (-1 for the logits)."""
    index = {name: i for i, name in enumerate(graph.src)}
    return np.asarray([index.get(d.split("<")[0], -1) for d in graph.dst])


def greedy(scores, graph: Graph, n: int, *, absolute: bool = True) -> np.ndarray:
    """EAP-IG's greedy circuit of n edges, grown from the logits (see the module doc)."""
    n = _check_n(n, graph.n_edges)
    s = np.asarray(scores, np.float64)
    s = np.abs(s) if absolute else s
    owner = node_of_dst(graph)
    into: dict[int, list[tuple[float, int, int]]] = {}  # node -> its in-edges
    order = 0
    for i, j in np.argwhere(graph.valid):
        into.setdefault(int(owner[j]), []).append((float(-s[i, j]), order, int(i) * 10**6 + int(j)))
        order += 1
    heap = list(into.get(-1, []))  # edges into the logits; the logits are in
    heapq.heapify(heap)
    out = np.zeros(graph.valid.shape, bool)
    added = {-1}
    for _ in range(n):
        _, _, code = heapq.heappop(heap)
        i, j = divmod(code, 10**6)
        out[i, j] = True
        if i not in added and i != 0:  # the parent joins: its in-edges become candidates
            added.add(i)
            for e in into.get(i, []):
                heapq.heappush(heap, e)
    return out


def prune(edges, graph: Graph, neurons=None) -> np.ndarray:
    """EAP-IG's prune: drop nodes lacking an in- or out-edge, then their edges, repeated.

    `neurons` [n_src, d_model]: nodes without a kept dimension are dropped first.
    Returns the pruned edges, [n_src, n_dst] bool.
    """
    e = np.asarray(edges, bool) & graph.valid
    owner = node_of_dst(graph)
    n_src = len(graph.src)
    alive = np.ones(n_src, bool) if neurons is None else np.asarray(neurons, bool).any(1)
    while True:
        has_out = np.asarray(e.any(1), bool)
        dst_in = np.asarray(e.any(0), bool)
        has_in = np.zeros(n_src, bool)
        np.logical_or.at(has_in, owner[owner >= 0], dst_in[owner >= 0])
        has_in[0] = True  # the input node counts as fed
        nodes = has_out & has_in & alive
        child_ok = np.where(owner >= 0, nodes[np.maximum(owner, 0)], True)
        new = e & nodes[:, None] & child_ok[None, :]
        if np.array_equal(new, e):
            return new
        e, alive = new, nodes


def node_circuit(node_scores, graph: Graph, n: int, *, absolute: bool = True) -> np.ndarray:
    """The n best source nodes with every edge out of them, pruned, [n_src, n_dst] bool."""
    s = np.asarray(node_scores, np.float64)
    if s.shape != (len(graph.src),):
        raise InputError(f"node scores have shape {s.shape}; expected ({len(graph.src)},)")
    n = _check_n(n, len(graph.src), "nodes")
    s = np.abs(s) if absolute else s
    keep = np.zeros(len(graph.src), bool)
    keep[np.argsort(-s, kind="stable")[:n]] = True
    return prune(graph.valid & keep[:, None], graph)


def neuron_circuit(neuron_scores, graph: Graph, n: int, *, absolute: bool = True):
    """The n best (node, dimension) pairs: (edges [n_src, n_dst], neurons [n_src, d])."""
    s = np.asarray(neuron_scores, np.float64)
    if s.ndim != 2 or s.shape[0] != len(graph.src):
        raise InputError(f"neuron scores have shape {s.shape}; expected ({len(graph.src)}, d)")
    n = _check_n(n, s.size, "neurons")
    s = np.abs(s) if absolute else s
    keep = np.zeros(s.size, bool)
    keep[np.argsort(-s.ravel(), kind="stable")[:n]] = True
    neurons = keep.reshape(s.shape)
    edges = prune(graph.valid & np.asarray(neurons.any(1), bool)[:, None], graph, neurons)
    nodes = np.asarray(edges.any(1), bool)
    return edges, neurons & nodes[:, None]


def weighted_edge_count(edges, neurons=None) -> float:
    """Edges, each weighted by the fraction of its source's dimensions kept."""
    e = np.asarray(edges, bool)
    if neurons is None:
        return float(e.sum())
    frac = np.asarray(neurons, bool).mean(-1)
    return float((e * frac[..., :, None]).sum())


def circuits_at(
    scores,
    graph: Graph,
    fractions: Sequence[float] | np.ndarray,
    *,
    absolute: bool = True,
    method: str = "topn",
) -> np.ndarray:
    """MIB's circuits: `int(k * n_edges)` edges per fraction k, pruned, [k, n_src, n_dst].

    `scores` [n_src, n_dst], or [n_fractions, n_src, n_dst] for one ranking per fraction
    (learned masks, one per sparsity target).
    """
    if method not in ("topn", "greedy"):
        raise InputError(f"construction {method!r}; valid: 'topn', 'greedy'")
    build = top_n if method == "topn" else greedy
    s = np.asarray(scores)
    per = s if s.ndim == 3 else [s] * len(fractions)  # one ranking per fraction (masks)
    if len(per) != len(fractions):
        raise InputError(f"{len(per)} score maps for {len(fractions)} fractions")
    out = [
        prune(build(sk, graph, int(k * graph.n_edges), absolute=absolute), graph)
        for sk, k in zip(per, fractions)
    ]
    return np.stack(out) if out else np.zeros((0,) + graph.valid.shape, bool)
