"""The reduced dynamics at large N: the 19-coordinate loss in O(N) per step.

`dynamics.reduced_forward` works from Gram matrices, so one step costs O(B C^2) for B
sequences of C = 2N context tokens: fine to N = 64, out of reach at N = 1024 (a million
steps of a 2048 x 2048 softmax). With orthonormal embeddings every sequence is the
canonical one with a different query index j, and all the layer-1 and layer-2 quantities
are "the same for every j, except at the positions 2j, 2j + 1 and on which side of 2j a
key sits". So the loss of every j follows from a few j-independent arrays over the
context (prefix and suffix sums), plus O(1) per j: O(N) per step for the whole training
set. The derivation, in the notation of `reduced_forward`:

- Layer 1, context row k (causal, C x C): self score a1 + a2, the label row 2m + 1 also
  a3 on its item 2m, every other earlier key 0. So Z_k = e^s + 2m (+ e^{a3} on label
  rows), s = a1 + a2, and u_k = 1/Z_k is the weight of a plain earlier key.
- Layer 1, query row: a1 on the key 2j (its token is the query's), a1 + a2 on itself,
  0 elsewhere: v = 1/Zq on plain keys, vj = e^{a1} v on 2j, vc = e^{a1 + a2} v on the
  query, Zq = C - 1 + e^{a1} + e^{a1 + a2}.
- Layer 2, query to context key k: base(k) (j-independent: v, the sign of k and the
  signed layer-1 mass w_k), plus r u_k for k > 2j + 1 (r j-independent), plus the
  spikes X_j at 2j and Y_j at 2j + 1; query to itself: S_C, j-independent.
- The prediction's coefficients over the context (layer 1 moved through layer 2) are
  suffix sums over keys; their squared norm, needed by the MSE, is a sum of squares of
  such suffix sums, split at 2j into prefix sums of j-independent arrays.

`structured_loss` equals `dynamics.reduced_loss` on the same query sets (a test checks
loss, attention and gradient in float64 for N = 2..16 and random coordinates). It runs
in float64: at N = 1024 the gradient on the plateau is about 1e-6 of the loss, below
float32's resolution of a sum over thousands of terms.

A training set is a weight per query index (`query_weights`: the population 1/N each; a
seed the counts of N uniform draws, over N), so the population and every seed share one
compiled program. `flow.py` integrates the gradient flow of this loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def _prefix(x: Array) -> Array:
    """[n] -> [n + 1]: sums of x[:i] for i = 0..n."""
    return jnp.concatenate([jnp.zeros((1,), x.dtype), jnp.cumsum(x)])


def _suffix(x: Array) -> Array:
    """[n] -> [n + 1]: sums of x[i:] for i = 0..n."""
    return jnp.concatenate([jnp.cumsum(x[::-1])[::-1], jnp.zeros((1,), x.dtype)])


def structured_losses(
    theta: Float[Array, "19"], n_pairs: int | Array, capacity: int | None = None
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """Loss and layer-2 attention to the correct label of each query index j = 0..N-1.

    The same numbers as `dynamics.reduced_loss` on `gram_data(n_pairs, [j])`, in O(N).
    With `capacity` (static, >= n_pairs) the arrays are padded to that many pairs and
    `n_pairs` may be a traced integer, so one compiled program serves every N up to it;
    the rows j >= n_pairs are 0.
    """
    n_max = n_pairs if capacity is None else capacity
    if not isinstance(n_max, int):
        raise TypeError("a traced n_pairs needs a static capacity")
    C = 2 * n_pairs
    a, b, g = theta[:3], theta[3:15], theta[15:]
    dt = theta.dtype
    k = jnp.arange(2 * n_max)
    real = (k < C).astype(dt)  # padding keys weigh nothing in any sum
    odd = (k % 2).astype(dt)
    m2 = (k - k % 2).astype(dt)  # 2m for both positions of pair m
    es, ea3 = jnp.exp(a[0] + a[1]), jnp.exp(a[2])
    u = 1.0 / (es + m2 + odd * ea3)  # plain earlier key of row k
    sigma = 1.0 - 2.0 * odd  # +1 items, -1 labels
    w = jnp.where(odd > 0, (ea3 - es) * u, es * u)  # sum_i A1[k, i] sigma_i
    # layer-1 query row
    zq = C - 1 + jnp.exp(a[0]) + jnp.exp(a[0] + a[1])
    v = 1.0 / zq
    vj, vc = jnp.exp(a[0]) * v, jnp.exp(a[0] + a[1]) * v
    # layer-2 scores
    base = v * (b[2] + b[3] + b[8] + b[10]) + b[9] * sigma * v + b[11] * v * w
    r = b[1] + b[3] * (vj + vc - v) + b[10] * (vj - v) + b[11] * (v - vj)
    s_query = (
        b[0]
        + (b[1] + b[2]) * (vj + vc)
        + b[3] * ((C - 1) * v**2 + (vj + vc) ** 2)
        + b[4]
        + (b[6] + b[8]) * vc
        + b[10] * ((C - 1) * v**2 + vj**2 + vc**2)
    )
    alpha = jnp.exp(base) * real  # keys before 2j
    beta = jnp.exp(base + r * u) * real  # keys after 2j + 1
    a_c = jnp.exp(s_query)
    # j-independent sums (prefix P.(i) = sum over k < i, suffix S.(i) = sum over k >= i)
    au, bu = alpha * u, beta * u
    Ap, Bs = _prefix(au), _suffix(bu)
    nxt = jnp.concatenate([k[1:], k[-1:]])  # i + 1 (only read on even i)
    even = 1.0 - odd
    l_alpha = alpha * es * u + even * alpha[nxt] * (ea3 - 1.0) * u[nxt]
    l_beta = beta * es * u + even * beta[nxt] * (ea3 - 1.0) * u[nxt]
    g_alpha = l_alpha - Ap[1:]  # E(i) - K_j for i < 2j
    g_beta = Bs[1:] + l_beta  # E(i) for i > 2j + 1
    P_a, P_a2 = _prefix(alpha), _prefix(alpha**2)
    P_g, P_g2, P_ag = _prefix(g_alpha), _prefix(g_alpha**2), _prefix(alpha * g_alpha)
    S_b, S_b2, S_g2, S_bg = (
        _suffix(beta),
        _suffix(beta**2),
        _suffix(g_beta**2),
        _suffix(beta * g_beta),
    )
    # per query index j
    j2 = 2 * jnp.arange(n_max)
    lo, hi = j2, j2 + 2  # prefix up to 2j, suffix from 2j + 2
    u0, u1 = u[j2], u[j2 + 1]
    x = (
        b[0]
        + b[1] * es * u0
        + b[2] * (vj + vc - v)
        + b[3] * (vj + vc - v) * es * u0
        + b[8] * (vj - v)
        + b[10] * (vj - v) * es * u0
    )
    y = (
        b[1] * ea3 * u1
        + b[3] * (vj + vc - v) * ea3 * u1
        + b[9] * (v - vj)
        + b[10] * (vj - v) * ea3 * u1
        + b[11] * (v - vj) * es * u1
    )
    s0, s1 = jnp.exp(base[j2] + x), jnp.exp(base[j2 + 1] + y)
    mass = P_a[lo] + s0 + s1 + S_b[hi]  # sum over context keys
    z2 = mass + a_c
    K = Ap[lo] + s0 * u0 + s1 * u1 + Bs[hi]
    e0 = s1 * u1 + Bs[hi] + s0 * es * u0 + s1 * (ea3 - 1.0) * u1
    e1 = Bs[hi] + s1 * es * u1
    sum_e2 = j2 * K**2 + 2 * K * P_g[lo] + P_g2[lo] + e0**2 + e1**2 + S_g2[hi]
    sum_ae = K * P_a[lo] + P_ag[lo] + s0 * e0 + s1 * e1 + S_bg[hi]
    sum_a2 = P_a2[lo] + s0**2 + s1**2 + S_b2[hi]
    sum_h2 = g[2] ** 2 * sum_a2 + 2 * g[2] * g[3] * sum_ae + g[3] ** 2 * sum_e2
    h0, h1 = g[2] * s0 + g[3] * e0, g[2] * s1 + g[3] * e1
    sum_qh = v * (g[2] + g[3]) * mass + (vj - v) * h0
    lam = g[1] + g[3] * a_c / z2
    sum_c2 = lam**2 * ((C - 1) * v**2 + vj**2) + 2 * lam / z2 * sum_qh + sum_h2 / z2**2
    c0, c1 = lam * vj + h0 / z2, lam * v + h1 / z2
    cq = g[0] + g[1] * vc + g[2] * a_c / z2 + g[3] * a_c / z2 * vc
    loss = 0.5 * (sum_c2 - c0**2 + (c0 + cq) ** 2 - 2 * c1 + 1.0)
    inside = j2 < C
    return jnp.where(inside, loss, 0.0), jnp.where(inside, s1 / z2, 0.0)


def structured_loss(
    theta: Float[Array, "19"],
    n_pairs: int | Array,
    weights: Float[Array, " n"],
    capacity: int | None = None,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(weighted mean loss, weighted mean attention to the correct label) of a training set
    given as weights over the query indices (summing to 1; zero-padded to `capacity`)."""
    loss, att = structured_losses(theta, n_pairs, capacity)
    return weights @ loss, weights @ att


def query_weights(n_pairs: int, seeds: Sequence[int]) -> np.ndarray:
    """[1 + len(seeds), N] weights over query indices: the exact population (1/N each),
    then per seed the counts of N uniform draws with `default_rng(seed)`, over N (the
    query sets of `dynamics.sample_query_sets`)."""
    rows = [np.full(n_pairs, 1.0 / n_pairs)]
    for s in seeds:
        q = np.random.default_rng(s).integers(0, n_pairs, n_pairs)
        rows.append(np.bincount(q, minlength=n_pairs) / n_pairs)
    return np.stack(rows)
