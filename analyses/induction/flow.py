"""Gradient flow of the 19 coordinates at large N, the plateau's instability, and the
scaling fits of t_ICL.

The paper's setting is gradient flow (Asm. 5). `dynamics.train_reduced` discretises it
with gradient descent at step 1, which needs about t_ICL steps: 7,000 at N = 64, over a
million at N = 1024. Here the flow d theta / dt = -grad L(theta) of `large_n.structured_loss`
is integrated by LSODA (scipy; it switches to a stiff method with a finite-difference
Jacobian where the fast output coordinates would limit an explicit one), which takes large
steps on the plateau: a thousand or so evaluations whatever N. Times are
continuous; with step 1, a GD step is one unit of time (checked: the flow's t_ICL is within
a few steps of GD's at N <= 64).

`plateau(n)` is the loss landscape where the run waits: the output coordinates gamma at
their optimum with alpha = beta = 0. Its gradient on beta_2 and the negative curvature in
the (alpha, beta) block set the escape rate, so t_ICL ~ 1 / (their size).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mechjax.analyses.induction.dynamics import Fit, coordinate_onsets, fit_loglog
from mechjax.analyses.induction.large_n import query_weights, structured_loss
from mechjax.analyses.induction.theory import coordinate_index

ONSET_NAMES = ("gamma_3", "beta_2", "alpha_3")
GAMMA = np.arange(15, 19)


MIN_CAPACITY = 64  # N up to this share one compiled program


def capacity(n_pairs: int) -> int:
    """The padded size a run of N compiles for: the next power of 2, at least 64."""
    return max(MIN_CAPACITY, 1 << (int(n_pairs) - 1).bit_length())


@functools.lru_cache(maxsize=None)
def _fns(cap: int):
    """One jitted function for every N up to `cap`: `(loss, attention), gradient` (N and
    the weights are arguments, so the population, the seeds and the small N share it).
    The integrator, its events, the sampled trajectory and the plateau all call it, so a
    capacity compiles once (~10 s); no Hessian: it compiles in ~40 s where LSODA's
    finite-difference Jacobian (19 gradients, a hundred times per run) costs seconds."""
    return jax.jit(jax.value_and_grad(lambda t, n, w: structured_loss(t, n, w, cap), has_aux=True))


def _bound(n_pairs: int, weights):
    """`theta -> ((loss, attention), gradient)` of N's capacity, N and the zero-padded
    weights bound (float64 arrays out)."""
    cap = capacity(n_pairs)
    f = _fns(cap)
    w = jnp.zeros(cap, jnp.float64).at[:n_pairs].set(jnp.asarray(weights, jnp.float64))
    n = jnp.int32(n_pairs)

    def vg(theta):
        (loss, att), g = f(jnp.asarray(theta, jnp.float64), n, w)
        return float(loss), float(att), np.asarray(g)

    return vg


class FlowRun(NamedTuple):
    """One gradient-flow run: the emergence times (continuous; NaN if never) and the
    trajectory sampled on `times` (dense output of the integrator)."""

    t_icl: float  # loss = half its start
    t_attention: float  # layer-2 attention to the correct label = 0.5
    t_end: float
    times: np.ndarray  # [grid]
    theta: np.ndarray  # [grid, 19]
    loss: np.ndarray  # [grid]
    attention: np.ndarray  # [grid]
    evaluations: int
    seconds: float


def gradient_flow(
    n_pairs: int,
    weights: np.ndarray,
    *,
    after: float = 1.5,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    grid: int = 1500,
    t_max: float = 1e13,
) -> FlowRun:
    """Integrate the flow from zero to `after` x t_ICL (float64, LSODA).

    Args:
      n_pairs: N.
      weights: [N] weights over query indices (a row of `query_weights`).
      after: the run ends at after * t_ICL, as `dynamics.train_reduced` (onsets are read
        against the coordinates there).
      rtol, atol: the integrator's tolerances.
      grid: samples of the trajectory, half evenly spaced and half geometric (so the
        early gamma onset is resolved too).
      t_max: give up (t_ICL NaN) if the loss has not halved by then.
    """
    from scipy.integrate import solve_ivp

    t0 = time.time()
    with jax.enable_x64(True):
        vg = _bound(n_pairs, weights)
        l0 = vg(np.zeros(19))[0]

        def fun(_, y):
            return -vg(y)[2]

        def halved(_, y):
            return vg(y)[0] - 0.5 * l0

        def attended(_, y):
            return vg(y)[1] - 0.5

        halved.terminal, halved.direction = True, -1  # type: ignore[attr-defined]
        attended.direction = 1  # type: ignore[attr-defined]
        kw = {"method": "LSODA", "rtol": rtol, "atol": atol, "dense_output": True}
        y0 = np.zeros(19)
        first = solve_ivp(fun, (0.0, t_max), y0, events=[halved, attended], **kw)
        if not len(first.t_events[0]):
            t_icl, t_end, parts = math.nan, float(first.t[-1]), [first]
        else:
            t_icl = float(first.t_events[0][0])
            t_end = after * t_icl
            second = solve_ivp(fun, (t_icl, t_end), first.y_events[0][0], events=[attended], **kw)
            parts = [first, second]
        hits = [float(t) for p in parts for t in p.t_events[-1]]
        t_att = min(hits) if hits else math.nan
        half = grid // 2
        times = np.unique(
            np.concatenate(
                [[0.0], np.linspace(0, t_end, half), np.geomspace(1e-2, t_end, grid - half)]
            )
        )
        theta = np.concatenate(
            [
                parts[0].sol(times[times <= t_icl]).T if len(parts) > 1 else parts[0].sol(times).T,
                parts[1].sol(times[times > t_icl]).T if len(parts) > 1 else np.zeros((0, 19)),
            ]
        )
        sampled = [vg(th)[:2] for th in theta]
        loss, att = (np.array([x[i] for x in sampled]) for i in range(2))
    evaluations = sum(int(p.nfev) for p in parts)
    return FlowRun(t_icl, t_att, t_end, times, theta, loss, att, evaluations, time.time() - t0)


def onset_times(run: FlowRun, fraction: float = 0.1) -> dict:
    """Time at which each of gamma_3, beta_2, alpha_3 first reaches `fraction` of its value
    at the end of the run (the grid's resolution)."""
    idx = coordinate_onsets(run.theta, ONSET_NAMES, fraction)
    return {k: (float(run.times[int(i)]) if math.isfinite(i) else math.nan) for k, i in idx.items()}


def flow_sweep(
    ns: Sequence[int],
    seeds: Sequence[int],
    *,
    after: float = 1.5,
    log=print,
) -> dict:
    """Per N: the exact population and every seed's training set (the query sets of
    `dynamics.sample_query_sets`) integrated by `gradient_flow`."""
    out: dict = {}
    for n in ns:
        t0 = time.time()
        rows = query_weights(n, seeds)
        runs = [gradient_flow(n, r, after=after) for r in rows]
        pop, rest = runs[0], runs[1:]
        out[n] = {
            "population": pop,
            "seeds": rest,
            "t_icl_population": pop.t_icl,
            "t_attention_population": pop.t_attention,
            "t_icl": [r.t_icl for r in rest],
            "t_attention": [r.t_attention for r in rest],
            "onsets_population": onset_times(pop),
            "onsets": [onset_times(r) for r in rest],
            "evaluations": [r.evaluations for r in runs],
            "seconds": time.time() - t0,
        }
        log(
            f"  flow N={n}: t_ICL population {pop.t_icl:.1f}, seeds "
            f"{[round(r.t_icl, 1) for r in rest]}, {time.time() - t0:.1f}s"
        )
    return out


# ======================================================================== the plateau


def _hessian_fd(vg, theta: np.ndarray, h: float) -> np.ndarray:
    """Central differences of the jitted gradient (float64): the exact Hessian compiles in
    ~40 s per N; these are 38 gradients."""
    cols = []
    for i in range(19):
        e = np.zeros(19)
        e[i] = h
        up, down = vg(theta + e)[2], vg(theta - e)[2]
        cols.append((up - down) / (2 * h))
    H = np.stack(cols, 1)
    return 0.5 * (H + H.T)


def plateau(n_pairs: int, newton_steps: int = 3, h: float = 1e-3) -> dict:
    """The plateau point (gamma at its optimum, alpha = beta = 0) of the population and
    what drives the escape from it, scaled by N^2: the gradient on beta_2 and alpha_3,
    and the most negative curvature of the (alpha, beta) block with its direction's
    alpha_3 and beta_2 components. The loss is quadratic in gamma, so Newton converges
    in one step (three for rounding); at alpha = beta = 0 some output directions coincide
    (uniform attention in both layers), and the minimum-norm optimum is the one gradient
    flow from zero reaches. `beta_2_share_x_j1` is each query index's part of the beta_2
    gradient times (j + 1): constant in j when the part falls as 1 / (j + 1), which sums
    to the harmonic number H_N ~ ln N over the population. Hessians by central differences
    of the gradient (step `h`; a test checks them against `jax.hessian`)."""
    with jax.enable_x64(True):
        vg = _bound(n_pairs, query_weights(n_pairs, [])[0])
        theta = np.zeros(19)
        for _ in range(newton_steps):
            g = vg(theta)[2][GAMMA]
            H = _hessian_fd(vg, theta, h)[np.ix_(GAMMA, GAMMA)]
            theta[GAMMA] -= np.linalg.lstsq(H, g, rcond=None)[0]
        g = vg(theta)[2]
        H = _hessian_fd(vg, theta, h)
        # each query index's share of the beta_2 gradient: one-hot weights, same program
        js = sorted({0, 1, 3, 7, 15, 63, n_pairs // 2, n_pairs - 1} & set(range(n_pairs)))
        per_query = {}
        for j in js:
            onehot = np.zeros(n_pairs)
            onehot[j] = 1.0
            g_j = _bound(n_pairs, onehot)(theta)[2][coordinate_index("beta_2")]
            per_query[j] = -g_j * n_pairs * (j + 1)
    ab = np.arange(15)
    evals, vecs = np.linalg.eigh(H[np.ix_(ab, ab)])
    v = vecs[:, 0] * np.sign(vecs[coordinate_index("beta_2"), 0] or 1.0)
    n2 = float(n_pairs) ** 2
    return {
        "n_pairs": n_pairs,
        "gamma": theta[GAMMA].round(6).tolist(),
        "grad_beta_2_x_n2": float(-g[coordinate_index("beta_2")] * n2),
        "grad_alpha_3_x_n2": float(-g[coordinate_index("alpha_3")] * n2),
        "min_curvature_x_n2": float(evals[0] * n2),
        "direction_alpha_3": float(v[coordinate_index("alpha_3")]),
        "direction_beta_2": float(v[coordinate_index("beta_2")]),
        # N x (query j's gradient on beta_2) x (j + 1): flat in j = a 1/(j + 1) profile
        "beta_2_share_x_j1": per_query,
    }


# ========================================================================== the fits


def local_slopes(ns: Sequence[int], times: Sequence[float]) -> dict[str, float]:
    """Slope of log t against log N between consecutive N."""
    return {
        f"{a}-{b}": math.log(tb / ta) / math.log(b / a)
        for (a, ta), (b, tb) in zip(zip(ns, times), zip(ns[1:], times[1:]))
    }


class LogFit(NamedTuple):
    """log t = c + slope log N - power log log N, least squares."""

    slope: float
    power: float
    c: float
    max_residual: float  # largest |log t - fit|


def fit_log_corrected(ns: Sequence[int], times: Sequence[float]) -> LogFit:
    """t ~ e^c N^slope / (ln N)^power: does t_ICL follow N^2 up to a power of log N?"""
    x = np.log(np.asarray(ns, float))
    y = np.log(np.asarray(times, float))
    A = np.stack([np.ones_like(x), x, -np.log(x)], 1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    return LogFit(float(coef[1]), float(coef[2]), float(coef[0]), float(np.abs(A @ coef - y).max()))


def fit_largest(sweep: dict, ns: Sequence[int], k: int) -> tuple[Fit, Fit | None]:
    """OLS slope over the `k` largest N: every seed's point, and the population alone
    (None with fewer than 3 N)."""
    top = sorted(ns)[-k:]
    pts = [(n, t) for n in top for t in sweep[n]["t_icl"]]
    fit = fit_loglog([n for n, _ in pts], [t for _, t in pts]) if len(pts) >= 3 else None
    pop = fit_loglog(top, [sweep[n]["t_icl_population"] for n in top]) if len(top) >= 3 else None
    if fit is None:
        assert pop is not None, "fit_largest needs 3 points"
        return pop, None
    return fit, pop
