"""MIB's circuit faithfulness: CPR, CMD and the mean f over edge fractions, and the
AUROC of a ranking against a ground-truth circuit (InterpBench's measure in MIB).

With m the metric (MIB: the logit difference, `loss=False`), f(C) = (m(C) - m(empty)) /
(m(full) - m(empty)), where "full" is the clean run and "empty" every edge ablated
(`apply_topn(0)` in `hannamw/MIB-circuit-track:MIB_circuit_track/evaluation.py`). At each
fraction k in `MIB_FRACTIONS` the circuit keeps `int(k * n_edges)` edges, pruned
(`construction.circuits_at`); then, on a linear axis over the fractions,

    CPR = sum_i (k_{i+1} - k_i) (f_i + f_{i+1}) / 2            (higher is better)
    CMD = sum_i (k_{i+1} - k_i) (|1 - f_i| + |1 - f_{i+1}|) / 2  (lower is better)

MIB reads CPR from circuits ranked by signed scores and CMD from circuits ranked by
|score| (`print_results.py`); `faithfulness` evaluates both rankings, the empty circuit
and the clean run in one compiled program and returns each from its own ranking, with
the mean f of each. A random ranking gives f ~ 0 below k = 0.5 and f(1) = 1, so CPR ~
0.25 and CMD ~ 0.75.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from mechjax.circuits.construction import circuits_at, greedy, prune, weighted_edge_count
from mechjax.circuits.evaluation import evaluate_graph
from mechjax.circuits.graph import Graph
from mechjax.errors import InputError
from mechjax.model import Model

__all__ = ["MIB_FRACTIONS", "area_scores", "auroc", "faithfulness"]

RANKINGS = ("signed", "absolute")  # CPR reads the first, CMD the second
MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def area_scores(fractions, f) -> tuple[float, float]:
    """(CPR, CMD): MIB's trapezoids of f and |1 - f| on a linear axis over `fractions`."""
    k, f = np.asarray(fractions, np.float64), np.asarray(f, np.float64)
    w = np.diff(k)
    cpr = float(np.sum(w * (f[1:] + f[:-1]) / 2))
    cmd = float(np.sum(w * (np.abs(1 - f[1:]) + np.abs(1 - f[:-1])) / 2))
    return cpr, cmd


def faithfulness(
    model: Model,
    clean,
    corrupted,
    metric: Callable,
    scores,
    graph: Graph,
    *,
    fractions: Sequence[float] | np.ndarray = MIB_FRACTIONS,
    construction: str = "topn",
    ablation: str = "corrupted",
    rankings: Sequence[str] = RANKINGS,
    attention_mask=None,
) -> dict:
    """CPR (signed ranking), CMD (|score| ranking) and the f curves, in one program.

    Returns a dict: `fractions`; `cpr` and `cmd`; per ranking ("signed", "absolute"):
    `f_<ranking>` (f at each fraction), `mean_f_<ranking>`, `n_edges_<ranking>` and
    `weighted_edges_<ranking>` (after pruning); `empty` and `full` (the metric with every
    edge ablated and of the clean run). `construction` is "topn" or "greedy" (MIB uses
    greedy for information flow routes). `rankings=("signed",)` evaluates one curve
    (CPR only, as MIB's `evaluate_area_under_curve` does per call): fractions + 2 circuits.
    """
    fr = np.asarray(fractions, np.float64)
    if fr.ndim != 1 or len(fr) < 2 or np.any(np.diff(fr) <= 0) or fr[0] < 0 or fr[-1] > 1:
        raise InputError(f"fractions must increase within [0, 1], got {list(fractions)}")
    rankings = tuple(rankings)
    if not rankings or len(set(rankings)) < len(rankings) or set(rankings) - set(RANKINGS):
        raise InputError(f"rankings {list(rankings)}; valid: one or both of {list(RANKINGS)}")
    circs = {r: circuits_at(scores, graph, fr, absolute=r == "absolute", method=construction)
             for r in rankings}  # fmt: skip
    empty = prune(np.zeros_like(graph.valid), graph)
    masks = np.concatenate([*circs.values(), empty[None], graph.valid[None]])
    vals = np.asarray(
        evaluate_graph(
            model, clean, corrupted, metric, masks, ablation=ablation, attention_mask=attention_mask
        ),
        np.float64,
    )
    m_empty, m_full = vals[-2], vals[-1]
    f = (vals[:-2] - m_empty) / (m_full - m_empty)
    n = len(fr)
    out: dict = {"fractions": fr.tolist(), "empty": float(m_empty), "full": float(m_full)}
    for i, (name, circ) in enumerate(circs.items()):
        fs = f[i * n : (i + 1) * n]
        out[f"f_{name}"] = fs.tolist()
        out[f"mean_f_{name}"] = float(fs.mean())
        out[f"n_edges_{name}"] = [int(c.sum()) for c in circ]
        out[f"weighted_edges_{name}"] = [weighted_edge_count(c) for c in circ]
    if "signed" in circs:
        out["cpr"] = area_scores(fr, out["f_signed"])[0]
    if "absolute" in circs:
        out["cmd"] = area_scores(fr, out["f_absolute"])[1]
    return out


def auroc(
    scores,
    graph: Graph,
    truth,
    *,
    fractions: Sequence[float] | np.ndarray = MIB_FRACTIONS,
    absolute: bool = True,
) -> dict:
    """AUROC of a ranking against a ground-truth circuit `truth` ([n_src, n_dst] bool).

    As MIB scores InterpBench (`evaluate_area_under_roc`): at each fraction k the greedy
    circuit of ceil(k * n_edges) edges (MIB passes the float count to `apply_greedy`,
    which takes the ceiling), pruned; the true and false positive rates over the graph's
    edges; the trapezoid of TPR over FPR / FPR(last) through those points. Also
    `rank_auroc`: the area under the full ROC curve of the scores themselves
    (Mann-Whitney), which does not depend on the construction.
    """
    t = np.asarray(truth, bool) & graph.valid
    if not t.any() or t.sum() == graph.n_edges:
        raise InputError("the ground-truth circuit must hold some edges of the graph, not all")
    tpr, fpr = [], []
    n = graph.n_edges
    # MIB hands apply_greedy the float k * n, whose countdown loop takes its ceiling
    circ = [
        prune(greedy(scores, graph, min(n, int(np.ceil(k * n))), absolute=absolute), graph)
        for k in fractions
    ]
    for c in circ:
        tp, fp = (c & t).sum(), (c & ~t & graph.valid).sum()
        tpr.append(tp / t.sum())
        fpr.append(fp / (graph.n_edges - t.sum()))
    x = np.asarray(fpr) / max(fpr[-1], 1e-12)
    area = float(np.sum(np.diff(x) * (np.asarray(tpr[1:]) + np.asarray(tpr[:-1])) / 2))
    s = np.asarray(scores, np.float64)
    s = np.abs(s) if absolute else s
    v = s[graph.valid]
    lab = t[graph.valid]
    ranks = _ranks(v)
    pos = lab.sum()
    rank_auc = (ranks[lab].sum() - pos * (pos + 1) / 2) / (pos * (len(v) - pos))
    return {"auroc": area, "tpr": tpr, "fpr": fpr, "rank_auroc": float(rank_auc)}


def _ranks(x) -> np.ndarray:
    """1-based ranks with ties averaged."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    vals, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.zeros(len(vals))
    np.add.at(sums, inv, r)
    return (sums / counts)[inv]
