"""Information flow routes (Ferrando & Voita 2024) as edge scores, from the clean run only.

For every destination input x_v (the residual stream a head's q, k or v input, an MLP or
the logits reads) and every upstream source output z_u at the same position:

    proximity(u -> v) = max(0, ||x_v||_1 - ||z_u - x_v||_1)
    importance(u -> v) = proximity(u -> v) / sum_{u' upstream of v} proximity(u' -> v)

averaged over each prompt's real positions and then over the prompts, as EAP-IG's
`get_scores_information_flow_routes` does (sum over items / number of items). No
corrupted run and no metric: the scores are non-negative, and MIB builds IFR circuits
greedily from the logits (`construction.greedy`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mechjax.circuits.evaluation import _GraphHook
from mechjax.circuits.graph import _prepare, graph_of
from mechjax.model import Model

__all__ = ["information_flow_routes"]


class _RouteHook(_GraphHook):
    """Collects source outputs; at each destination input, its importance row."""

    def __init__(self, model, weights, valid):
        super().__init__(model, None, None, None, None)
        self.valid = valid  # [n_src, n_dst] numpy: who is upstream of whom
        self.off = np.zeros((1, valid.shape[1]))  # `_columns` reads the destination count
        self.weights = weights  # [b, p]: 1 / (real positions) at real tokens, else 0
        self.rows: dict[int, jnp.ndarray] = {}

    def __call__(self, name, x):
        if name in self.ins:
            self._importance(name, x)
        if name in self.outs:
            self.seen.append(x if x.ndim == 4 else x[:, :, None])
        return x

    def _importance(self, name, x):
        cur = jnp.concatenate(self.seen, 2)  # [b, p, k, d]
        xs = x if x.ndim == 4 else x[:, :, None]  # [b, p, t, d]
        start, stop = self._columns(name)
        # a clean run's per-head inputs are copies of one residual stream: one row each
        xv = xs[:, :, 0]
        prox = jnp.maximum(
            0.0, jnp.abs(xv).sum(-1)[:, :, None] - jnp.abs(cur - xv[:, :, None]).sum(-1)
        )  # [b, p, k]
        up = jnp.asarray(self.valid[: cur.shape[2], start], prox.dtype)  # upstream sources
        prox = prox * up
        imp = prox / jnp.maximum(prox.sum(-1, keepdims=True), 1e-30)
        row = jnp.einsum("bpk,bp->k", imp, self.weights)
        for j in range(start, stop):
            self.rows[j] = row


def information_flow_routes(model: Model, clean, *, attention_mask=None, batch_size=None):
    """IFR edge scores `[n_src, n_dst]` (0 where no edge) and the graph; clean run only."""
    model, clean, _ = _prepare(model, clean, clean)
    graph = graph_of(model)
    n = clean.shape[0]
    step = n if batch_size is None else max(1, int(batch_size))
    total = np.zeros(graph.valid.shape)
    for s in range(0, n, step):
        m = None if attention_mask is None else jnp.asarray(attention_mask)[s : s + step]
        total += np.asarray(_routes(model, clean[s : s + step], m), np.float64)
    scores = np.where(graph.valid, total / n, 0.0).astype(np.float32)
    return jnp.asarray(scores), graph


@jax.jit
def _routes(model, clean, mask):
    real = jnp.ones(clean.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    valid = graph_of(model).valid
    hook = _RouteHook(model, real / real.sum(1, keepdims=True), valid)
    model.forward(clean, hook=hook, attention_mask=mask)
    n_src = valid.shape[0]
    cols = []
    for j in range(valid.shape[1]):
        row = hook.rows[j]
        cols.append(jnp.pad(row, (0, n_src - row.shape[0])))
    return jnp.stack(cols, 1)  # [n_src, n_dst]
