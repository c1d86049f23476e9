"""Pictures of circuits: the graph with its nodes by layer, and faithfulness curves.

`draw_circuit` puts the input at the bottom, each layer's heads and MLP on a row above
the previous one and the logits on top; an edge of the circuit is a line from its source
to the destination node (q/k/v inputs of a head meet at the head), blue for a positive
score and red for a negative one, wider for a larger |score|. Nodes without an edge in
the circuit are drawn faint. `plot_faithfulness` draws f against the edge fraction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mechjax.circuits.construction import node_of_dst
from mechjax.circuits.graph import Graph
from mechjax.plotting import subplots

__all__ = ["draw_circuit", "plot_faithfulness"]


def _node_xy(graph: Graph) -> dict[str, tuple[float, float]]:
    """Node name -> (x, y): heads spread over a row per layer, the MLP at the right."""
    n_layers = sum(1 for s in graph.src if s.startswith("m"))
    n_heads = sum(1 for s in graph.src if s.startswith("a0."))
    xy = {"input": (n_heads / 2, 0.0), "logits": (n_heads / 2, n_layers + 1.0)}
    for name in graph.src[1:]:
        if name.startswith("m"):
            xy[name] = (n_heads + 0.5, int(name[1:]) + 1.0)
        else:
            l, h = (int(x[1:]) for x in name.split("."))
            xy[name] = (float(h), l + 1.0)
    return xy


def draw_circuit(graph: Graph, edges, scores=None, path=None, *, title: str = ""):
    """The circuit `edges` ([n_src, n_dst] bool) drawn with its nodes by layer."""
    e = np.asarray(edges, bool) & graph.valid
    s = np.ones(e.shape) if scores is None else np.asarray(scores, np.float64)
    xy = _node_xy(graph)
    owner = node_of_dst(graph)
    dst_node = [graph.src[o] if o >= 0 else "logits" for o in owner]
    n_layers = sum(1 for x in graph.src if x.startswith("m"))
    n_heads = sum(1 for x in graph.src if x.startswith("a0."))
    fig, ax = subplots(figsize=(max(4.0, 0.5 * n_heads + 3), max(3.0, 0.35 * n_layers + 2)))
    big = np.abs(s[e]).max() if e.any() else 1.0
    for i, j in np.argwhere(e):
        (x0, y0), (x1, y1) = xy[graph.src[i]], xy[dst_node[j]]
        w = 0.4 + 2.6 * abs(s[i, j]) / (big or 1.0)
        ax.plot([x0, x1], [y0, y1], color="tab:blue" if s[i, j] >= 0 else "tab:red",
                lw=w, alpha=0.6, zorder=1)  # fmt: skip
    used = {graph.src[i] for i in np.flatnonzero(e.any(1))} | {
        dst_node[j] for j in np.flatnonzero(e.any(0))
    }
    for name, (x, y) in xy.items():
        on = name in used
        ax.scatter([x], [y], s=60 if on else 12, color="black" if on else "lightgrey", zorder=2)
        if on:
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_yticks(range(n_layers + 2))
    ax.set_yticklabels(["input"] + [f"L{l}" for l in range(n_layers)] + ["logits"], fontsize=6)
    ax.set_xticks([])
    ax.set_title(title or f"circuit: {int(e.sum())} edges", fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path), dpi=130)
    return fig


def plot_faithfulness(result: dict, path=None, *, title: str = ""):
    """f against the edge fraction for both rankings of a `faithfulness` result."""
    fig, ax = subplots(figsize=(4.5, 3.2))
    for name in ("signed", "absolute"):
        ax.plot(result["fractions"], result[f"f_{name}"], marker="o", ms=3, label=name)
    ax.set_xscale("log")
    ax.axhline(1, color="grey", ls=":")
    ax.axhline(0, color="grey", ls=":")
    ax.set_xlabel("fraction of edges")
    ax.set_ylabel("faithfulness f")
    ax.set_title(title or f"CPR {result['cpr']:.2f}, CMD {result['cmd']:.2f}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path), dpi=130)
    return fig
