"""Dynamics inside the 19-dim subspace (from Gram matrices), emergence times, the
log-log fit of t_ICL against N, PCA of the trajectory, and the emergence sweep."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mechjax.analyses.induction.theory import (
    canonical_sequences,
    coordinate_index,
    rotation_M,
)

Array = jax.Array
Params = dict[str, Any]  # nested: blocks are a list of dicts


# ================================================== dynamics inside the 19-dim subspace


class GramData(NamedTuple):
    """Sequences as inner products. All sequences share their context (the N pairs) and
    differ in the query: context token Gram Gc [C, C] (C = 2N), position Gram P [T, T] and
    PM[i, j] = p_i^T M p_j [T, T], query token against context tokens gq [B, C] (the query
    has norm 1), and the context position of the correct label, target [B]."""

    Gc: Array
    P: Array
    PM: Array
    gq: Array
    target: Array


def gram_data(n_pairs: int, query: Sequence[int] | np.ndarray | None = None) -> GramData:
    """Gram form of `canonical_sequences(n_pairs, query)` (orthonormal embeddings)."""
    n = n_pairs
    query = np.arange(n) if query is None else np.asarray(query)
    pos = np.asarray(canonical_sequences(n, [0]).pos[0], np.float64)
    M = rotation_M(2 * n + 2)
    gq = np.zeros((len(query), 2 * n), np.float32)
    gq[np.arange(len(query)), 2 * query] = 1.0
    return GramData(
        jnp.eye(2 * n),
        jnp.asarray(pos @ pos.T, jnp.float32),
        jnp.asarray(pos @ M @ pos.T, jnp.float32),
        jnp.asarray(gq),
        jnp.asarray(2 * query + 1, jnp.int32),
    )


def reduced_forward(theta: Array, data: GramData) -> tuple[Array, Array, Array]:
    """The causal disentangled model with weights `Ansatz.induction(...).embed(theta)`.

    Computed from inner products only: the context rows of the layer-1 pattern do not
    see the query, so they are shared by every sequence, and each sequence adds one query
    row. Returns (coefficients c [B, T] of the prediction over the sequence's tokens,
    layer-1 query rows [B, T], layer-2 pattern [B, T]).
    """
    a, b, g = theta[:3], theta[3:15], theta[15:]
    Gc, P, PM, gq = data.Gc, data.P, data.PM, data.gq
    C = Gc.shape[0]
    ones = jnp.ones(gq.shape[:1] + (1,))

    def with_query(context, query):  # [B, C], [B] -> [B, T]
        return jnp.concatenate([context, query[:, None]], 1)

    s1c = a[0] * Gc + a[1] * P[:C, :C] + a[2] * PM[:C, :C]
    A1c = jax.nn.softmax(jnp.where(jnp.tril(jnp.ones((C, C), bool)), s1c, -jnp.inf), -1)
    tq = jnp.concatenate([gq, ones], 1)  # t_q . t_k
    q1 = jax.nn.softmax(a[0] * tq + a[1] * P[C] + a[2] * PM[C], -1)  # layer-1 query row
    # token parts: t (the token) and h (what layer 1 moved) of query q and key j
    t_h = with_query(gq @ A1c.T, jnp.sum(q1 * tq, 1))
    h_t = with_query(q1[:, :C] @ Gc + q1[:, C:] * gq, jnp.sum(q1 * tq, 1))
    h_h = with_query(h_t[:, :C] @ A1c.T, jnp.sum(h_t * q1, 1))
    # position parts, I and M
    p_h = with_query(jnp.broadcast_to(A1c @ P[C, :C], gq.shape), q1 @ P[C])
    p_Mh = with_query(jnp.broadcast_to(A1c @ PM[C, :C], gq.shape), q1 @ PM[C])
    hP, hPM = q1 @ P, q1 @ PM
    h_h_p = with_query(hP[:, :C] @ A1c.T, jnp.sum(hP * q1, 1))
    h_Mh_p = with_query(hPM[:, :C] @ A1c.T, jnp.sum(hPM * q1, 1))
    terms = [tq, t_h, h_t, h_h, P[C] + 0 * tq, PM[C] + 0 * tq, p_h, p_Mh, hP, hPM, h_h_p, h_Mh_p]
    A2 = jax.nn.softmax(sum(b[i] * x for i, x in enumerate(terms)), -1)
    A2A1 = jnp.concatenate([A2[:, :C] @ A1c, jnp.zeros_like(ones)], 1) + A2[:, C:] * q1
    c = g[0] * jax.nn.one_hot(C, C + 1) + g[1] * q1 + g[2] * A2 + g[3] * A2A1
    return c, q1, A2


def reduced_loss(theta: Array, data: GramData) -> tuple[Array, Array]:
    """(mean loss, mean layer-2 attention from the query to the correct label)."""
    c, _, A2 = reduced_forward(theta, data)
    C = data.Gc.shape[0]
    cc, cq = c[:, :C], c[:, C]
    cG = cc @ data.Gc
    quad = jnp.sum(cG * cc, 1) + 2 * cq * jnp.sum(data.gq * cc, 1) + cq**2
    rows = jnp.arange(c.shape[0])
    cross = cG[rows, data.target] + data.gq[rows, data.target] * cq
    loss = 0.5 * (quad - 2 * cross + data.Gc[data.target, data.target])
    return loss.mean(), A2[rows, data.target].mean()


@functools.partial(jax.jit, static_argnames=("steps",))
def _reduced_chunk(theta, data, lr, scale, *, steps: int):
    def body(th, _):
        (loss, att), g = jax.value_and_grad(reduced_loss, has_aux=True)(th, data)
        return th - lr * g / scale, (loss, att, th)

    return jax.lax.scan(body, theta, None, length=steps)


class Trajectory(NamedTuple):
    """Per step, before the update: loss, attention to the correct label, coordinates [.., 19]."""

    loss: np.ndarray
    attention: np.ndarray
    theta: np.ndarray


def train_reduced(
    data: GramData,
    *,
    lr: float = 1.0,
    steps: int | None = None,
    max_steps: int = 200_000,
    chunk: int = 500,
    scale: np.ndarray | None = None,
    batched: bool = False,
) -> Trajectory:
    """Gradient descent on the 19 coordinates from zero: `theta -= lr * grad / scale`.

    `scale = ansatz.norms2` reproduces gradient descent on the full weights exactly; the
    default (1) is the same up to a step-size factor when d_tok = d_pos. `batched=True`
    vmaps over a leading seed axis of `data.gq` and `data.target`. Without `steps`, runs
    until every run's loss is below half its initial value, then on to 1.5 times that
    step (in chunks).
    """
    scale = jnp.ones(19) if scale is None else jnp.asarray(scale)

    def run(theta, n):
        def one(t, d):
            return _reduced_chunk(t, d, lr, scale, steps=n)

        axes = GramData(None, None, None, 0, 0)
        return jax.vmap(one, in_axes=(0, axes))(theta, data) if batched else one(theta, data)

    theta = jnp.zeros((data.gq.shape[0], 19) if batched else (19,))
    parts: list = []
    done, target = 0, steps
    while target is None or done < target:
        n = chunk if target is None else min(chunk, target - done)
        theta, out = run(theta, n)
        parts.append(jax.device_get(out))
        done += n
        if target is None:
            loss = np.concatenate([p[0] for p in parts], axis=-1)
            below = loss < 0.5 * loss[..., :1]
            if below.any(-1).all():
                t_icl = int(np.max(np.argmax(below, -1)))
                target = max(done, int(math.ceil(1.5 * t_icl / chunk)) * chunk)
            elif done >= max_steps:
                break
    loss, att = (np.concatenate([p[i] for p in parts], axis=-1) for i in range(2))
    return Trajectory(loss, att, np.concatenate([p[2] for p in parts], axis=-2))


# ================================================================== emergence measures


def emergence_step(loss: np.ndarray, fraction: float = 0.5) -> float:
    """First step with loss < fraction * loss[0] (NaN if never)."""
    below = np.asarray(loss) < fraction * np.asarray(loss)[0]
    return float(np.argmax(below)) if below.any() else float("nan")


def attention_step(attention: np.ndarray, level: float = 0.5) -> float:
    """First step with attention to the correct label >= level (NaN if never)."""
    above = np.asarray(attention) >= level
    return float(np.argmax(above)) if above.any() else float("nan")


def coordinate_onsets(theta: np.ndarray, names: Sequence[str], fraction: float = 0.1) -> dict:
    """First step at which each named coordinate reaches `fraction` of its final value."""
    out = {}
    for name in names:
        x = np.asarray(theta)[:, coordinate_index(name)]
        final = x[-1]
        hit = np.abs(x) >= fraction * abs(final) if final != 0 else np.zeros_like(x, bool)
        hit &= np.sign(x) == np.sign(final)
        out[name] = float(np.argmax(hit)) if hit.any() else float("nan")
    return out


class Fit(NamedTuple):
    slope: float
    intercept: float
    slope_ci: tuple[float, float]
    n_points: int
    method: str


def fit_loglog(
    ns: ArrayLike | Sequence[int | float], times: ArrayLike | Sequence[int | float]
) -> Fit:
    """OLS of log t on log N with a t-based 95% CI of the slope (n - 2 dof)."""
    from scipy import stats

    x, y = np.log(np.asarray(ns, float)), np.log(np.asarray(times, float))
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        raise ValueError(f"need >= 3 points over >= 2 values of N, got {n}")
    xc = x - x.mean()
    slope = float(xc @ (y - y.mean()) / (xc @ xc))
    intercept = float(y.mean() - slope * x.mean())
    resid = y - (intercept + slope * x)
    se = math.sqrt(float(resid @ resid) / (n - 2) / float(xc @ xc))
    half = float(stats.t.ppf(0.975, n - 2)) * se
    return Fit(slope, intercept, (slope - half, slope + half), n, "OLS, t-based 95% CI (n-2 dof)")


def pca(trajectory: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(explained-variance ratios, projections [steps, k]) of a centred trajectory [steps, dim]."""
    X = np.asarray(trajectory, np.float64)
    X = X - X.mean(0)
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    var = s**2
    return var / var.sum(), U * s


def sample_query_sets(n_pairs: int, seeds: Sequence[int], n_sequences: int) -> GramData:
    """One finite training set per seed (query indices uniform), stacked on a seed axis."""
    qs = [np.random.default_rng(s).integers(0, n_pairs, n_sequences) for s in seeds]
    parts = [gram_data(n_pairs, q) for q in qs]
    p = parts[0]
    return GramData(
        p.Gc, p.P, p.PM, jnp.stack([q.gq for q in parts]), jnp.stack([q.target for q in parts])
    )


def emergence_sweep(
    ns: Sequence[int],
    seeds: Sequence[int],
    *,
    lr: float = 1.0,
    max_steps: int = 200_000,
    log=print,
) -> dict:
    """t_ICL and coordinate onsets for each N, the exact population and every seed in one vmap.

    The population has each query index once (N sequences); seed s draws N query indices
    uniformly with `numpy.random.default_rng(s)`.
    """
    out = {}
    names = ["gamma_3", "beta_2", "alpha_3"]
    for n in ns:
        t0 = time.time()
        sets = sample_query_sets(n, seeds, n)
        pop = gram_data(n)
        data = sets._replace(
            gq=jnp.concatenate([pop.gq[None], sets.gq]),
            target=jnp.concatenate([pop.target[None], sets.target]),
        )
        runs = train_reduced(data, lr=lr, max_steps=max_steps, batched=True)
        traj = [
            Trajectory(runs.loss[i], runs.attention[i], runs.theta[i])
            for i in range(len(seeds) + 1)
        ]
        out[n] = {
            "population": traj[0],
            "seeds": traj[1:],
            "t_icl_population": emergence_step(traj[0].loss),
            "t_icl": [emergence_step(r.loss) for r in traj[1:]],
            "t_attention": [attention_step(r.attention) for r in traj[1:]],
            "onsets_population": coordinate_onsets(traj[0].theta, names),
            "onsets": [coordinate_onsets(r.theta, names) for r in traj[1:]],
            "steps": runs.loss.shape[-1],
        }
        log(
            f"  N={n}: t_ICL population {out[n]['t_icl_population']:.0f}, seeds "
            f"{out[n]['t_icl']}, {out[n]['steps']} steps, {time.time() - t0:.1f}s"
        )
    return out
