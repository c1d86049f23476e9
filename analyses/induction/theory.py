"""Reproduction of "On the Emergence of Induction Heads for In-Context Learning".

Musat, Pimentel, Noci, Stolfo, Sachan, Hofmann (arXiv 2511.01033). Claims re-measured:

- Theorem 1: trained from zero on the minimal ICL task (population MSE, gradient flow),
  the disentangled two-layer attention-only transformer stays in a 19-dimensional
  subspace, alpha in R^3 (layer-1 key-query), beta in R^12 (layer-2 key-query),
  gamma in R^4 (output). Expected here: off-subspace residual ~1e-6 in float32.
- Only alpha_3 (previous-token attention), beta_2 (match on token) and gamma_3 (copy)
  drive the emergence, in the order gamma_3, beta_2, alpha_3 (Theorem 2), and a PCA of
  the parameter trajectory shows about 3 dominant directions.
- t_ICL = Theta(N^2): the fitted slope of log t_ICL against log N is expected near 2.
- The same order of the progress measures (the paper's Eqs. 20-22) in a standard
  two-layer attention-only transformer trained with cross-entropy.

Reconstruction (the paper's code is not public and its Eqs. 4-7 were not available; what
follows is derived from the published structure "W1 = diag(a1 I, a2 I + a3 M)", 3 + 12 +
4 = 19 parameters, and the symmetry argument of Theorem 1):

- Task: N item-label pairs then a query, `x_1 y_1 ... x_N y_N x_q` (T = 2N + 1 positions),
  `x_q = x_j` for a uniformly drawn j, target `y_j`. Items and labels are distinct
  orthonormal vectors of a token space R^{d_tok}. Positions are orthonormal vectors of
  R^{d_pos} = C^{N+1} seen as a real space, with the label position of a pair the image of
  its item position under the fixed rotation M (multiplication by i, so M^T = -M,
  M^2 = -I): `p(y_k) = M p(x_k)`. The query has its own position.
- Disentangled transformer (Friedman et al. 2023): layers concatenate instead of add.
  `x0_i = [t_i; p_i]`; layer 1 scores `x0_i^T W1 x0_j` (causal softmax, no value or output
  matrices) and `x1_i = [x0_i; sum_j A1_ij x0_j]`; layer 2 attends from the query with
  `x1_q^T W2 x1_j` and `x2_q = [x1_q; sum_j A2_qj x1_j]`; the prediction is `W3 x2_q`,
  the loss `0.5 * ||W3 x2_q - y||^2` (W1 is 2D x 2D, W2 4D x 4D, W3 D x 8D).
- The 19 coordinates (`Ansatz.induction`): a token block of any weight is a multiple of I,
  a position block a combination of I and M, token-position blocks are 0:
  alpha_1 (t,t) I; alpha_2, alpha_3 (p,p) I and M; beta_1..4 the token blocks (query row,
  key column) (t,t), (t,h1t), (h1t,t), (h1t,h1t), so beta_2 matches the query token with
  the token layer 1 moved into a key; beta_5..12 the position blocks (p,p), (p,h1p),
  (h1p,p), (h1p,h1p), each I then M; gamma_1..4 read the token parts t, h1t, h2t, h2h1t
  of the final stream, so gamma_3 copies the token layer 2 attended to.
- Population loss: Theorem 1 follows from invariance under rotations of the token space
  and under the rotations of the position space that commute with M. The confinement test
  trains on the orbit of the N canonical sequences under finite groups with the same
  commutant (signed cyclic permutations of tokens; the Weyl-Heisenberg group of C^{N+1}
  for positions): an exact population whose gradient cannot leave the ansatz unless the
  model or the ansatz is wrong.
- Emergence runs use the dynamics inside the 19-dim subspace computed from Gram matrices
  (exactly the full model restricted to the subspace; a test checks both agree), full-batch
  gradient descent on the coordinates, `theta -= lr * grad` (= gradient descent on the
  full weights with step lr * D when d_tok = d_pos = D). With orthonormal embeddings the
  only randomness of the task is the query index, so a seed is a finite training set of
  N sequences with random query indices; the exact population (every j once) is run too,
  in the same `vmap`.
- t_ICL: first step at which the loss falls below half its initial value 0.5 (the loss
  sits near 0.5 (1 - 1/N) on the plateau). Also reported: first step at which the
  layer-2 attention from the query to the correct label exceeds 0.5.
- Emergence time of a coordinate: first step at which it reaches 10% of its value at the
  end of the run (runs go on for at least half of t_ICL beyond t_ICL).
- Slope CI: ordinary least squares of log t_ICL on log N over all (N, seed) points, 95%
  interval from the t distribution with n - 2 degrees of freedom. Local slopes between
  consecutive N are reported too, since Theta(N^2) is an asymptotic statement.

Standard transformer: `models/toy.py` with 2 attention-only layers, one head each, no
LayerNorm, trained with cross-entropy and Adam through `mechjax.training` on repeated
random tokens `r_1..r_L` followed by a random rotation `r_{k+1}..r_L r_1..r_k` (loss on
the second half, where induction predicts the next token). This is the usual induction
task of Olsson et al. (2022) except for the rotation: with a fixed repeat distance a
2-layer model solves the task with a purely positional head (observed here: layer 0 then
stops attending to the previous token and beta_2 turns negative). It gives a loss at up
to L - 1 positions per sequence, where the one-query ICL format gives one, so an
induction head forms within a CPU budget. Checkpoints are loaded as one stacked pytree
and the progress measures (Eqs. 20-22), loss and induction-head score are evaluated over
them with one `vmap`. Onset of a measure: first checkpoint at which its change from
step 0 reaches 10% of its final change.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from mechjax.models import toy

from mechjax import training
from mechjax.hooks import HookContext

Array = jax.Array
Params = dict[str, Array]

TOKEN, POSITION = "token", "position"

# ================================================================== task and embeddings


def rotation_M(d_pos: int) -> np.ndarray:
    """The fixed rotation pairing item and label positions: M e_{2m} = e_{2m+1}.

    Block-diagonal 90-degree rotations (multiplication by i on C^{d_pos/2}): M^T = -M.
    """
    if d_pos % 2:
        raise ValueError(f"d_pos must be even, got {d_pos}")
    M = np.zeros((d_pos, d_pos))
    for m in range(d_pos // 2):
        M[2 * m + 1, 2 * m], M[2 * m, 2 * m + 1] = 1.0, -1.0
    return M


class ICLData(NamedTuple):
    """Minimal ICL sequences as vectors: tokens [B, T, d_tok], positions [B, T, d_pos],
    targets [B, d_tok]. The query is the last position."""

    tok: Array
    pos: Array
    target: Array


def canonical_sequences(n_pairs: int, query: Sequence[int] | None = None) -> ICLData:
    """One sequence per query index (default: every j once, the exact population).

    Items are e_0..e_{N-1}, labels e_N..e_{2N-1} (d_tok = 2N); pair k sits at positions
    e_{2k} (item) and e_{2k+1} = M e_{2k} (label); the query at e_{2N} (d_pos = 2N + 2).
    """
    n = n_pairs
    query = list(range(n)) if query is None else [int(j) for j in query]
    T, d_tok, d_pos = 2 * n + 1, 2 * n, 2 * n + 2
    tok = np.zeros((len(query), T, d_tok), np.float32)
    pos = np.zeros((len(query), T, d_pos), np.float32)
    target = np.zeros((len(query), d_tok), np.float32)
    for b, j in enumerate(query):
        for k in range(n):
            tok[b, 2 * k, k] = tok[b, 2 * k + 1, n + k] = 1.0
            pos[b, 2 * k, 2 * k] = pos[b, 2 * k + 1, 2 * k + 1] = 1.0
        tok[b, -1, j] = 1.0
        pos[b, -1, 2 * n] = 1.0
        target[b, n + j] = 1.0
    return ICLData(jnp.asarray(tok), jnp.asarray(pos), jnp.asarray(target))


# ============================================================ the disentangled transformer


def init_disentangled(d_tok: int, d_pos: int) -> Params:
    """Zero weights (Asm. 1): W1 [D0, D0], W2 [2 D0, 2 D0], W3 [d_tok, 4 D0], D0 = d_tok + d_pos."""
    d0 = d_tok + d_pos
    return {
        "W1": jnp.zeros((d0, d0)),
        "W2": jnp.zeros((2 * d0, 2 * d0)),
        "W3": jnp.zeros((d_tok, 4 * d0)),
    }


class DTOutput(NamedTuple):
    pred: Array  # [B, d_tok]
    pattern1: Array  # [B, T, T]
    pattern2: Array  # [B, T] (query row)


def disentangled_forward(
    params: Params, tok: Array, pos: Array, *, causal: bool = True
) -> DTOutput:
    """The disentangled two-layer attention-only transformer at the query (last) position."""
    x0 = jnp.concatenate([tok, pos], -1)
    T = x0.shape[1]
    s1 = jnp.einsum("bid,de,bje->bij", x0, params["W1"], x0)
    if causal:
        s1 = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s1, -jnp.inf)
    a1 = jax.nn.softmax(s1, -1)
    x1 = jnp.concatenate([x0, a1 @ x0], -1)
    xq = x1[:, -1]
    a2 = jax.nn.softmax(jnp.einsum("bd,de,bje->bj", xq, params["W2"], x1), -1)
    x2 = jnp.concatenate([xq, jnp.einsum("bj,bjd->bd", a2, x1)], -1)
    return DTOutput(x2 @ params["W3"].T, a1, a2)


def mse_loss(params: Params, data: ICLData, *, causal: bool = True) -> Array:
    """Population (batch-mean) loss 0.5 * ||prediction - target||^2."""
    pred = disentangled_forward(params, data.tok, data.pos, causal=causal).pred
    return 0.5 * jnp.mean(jnp.sum((pred - data.target) ** 2, -1))


# ============================================================================ the ansatz


@dataclasses.dataclass(frozen=True)
class Block:
    """One basis element: `kind` ("I" or "M") placed in `param[rows, cols]`."""

    name: str
    param: str
    rows: tuple[int, int]
    cols: tuple[int, int]
    kind: str


class Ansatz:
    """A pluggable basis of mutually orthogonal weight-space directions.

    `project`, `coords`, `residual` and `theta` work for any list of blocks; the 19-dim
    basis of the paper is `Ansatz.induction(d_tok, d_pos)`, a sub-basis `subset(names)`.
    """

    def __init__(self, d_tok: int, d_pos: int, blocks: Sequence[Block]):
        self.d_tok, self.d_pos = d_tok, d_pos
        self.blocks = tuple(blocks)
        self.M = rotation_M(d_pos)
        self.shapes = {k: v.shape for k, v in init_disentangled(d_tok, d_pos).items()}
        self._basis = [self._element(b) for b in self.blocks]
        flat = np.stack([np.concatenate([e[k].ravel() for k in sorted(e)]) for e in self._basis])
        gram = flat @ flat.T
        if np.abs(gram - np.diag(np.diag(gram))).max() > 1e-9:
            raise ValueError("ansatz blocks must be mutually orthogonal")
        self.norms2 = np.diag(gram).astype(np.float32)  # ||B_k||_F^2
        # per weight matrix, the basis elements stacked: [size, *shape]
        self._stacked = {k: np.stack([e[k] for e in self._basis]).astype(np.float32)
                         for k in self.shapes}

    @classmethod
    def induction(cls, d_tok: int, d_pos: int) -> Ansatz:
        """The 19 coordinates alpha_1..3, beta_1..12, gamma_1..4 (see the module docstring)."""
        t, p = d_tok, d_pos
        d0 = t + p
        # offsets of the token-type and position-type parts of the streams x0, x1, x2
        tok1, pos1 = [0, d0], [t, d0 + t]  # t, h1t ; p, h1p inside x1
        blocks = [
            Block("alpha_1", "W1", (0, t), (0, t), "I"),
            Block("alpha_2", "W1", (t, d0), (t, d0), "I"),
            Block("alpha_3", "W1", (t, d0), (t, d0), "M"),
        ]
        i = 1
        for r in tok1:
            for c in tok1:
                blocks.append(Block(f"beta_{i}", "W2", (r, r + t), (c, c + t), "I"))
                i += 1
        for r in pos1:
            for c in pos1:
                for kind in "IM":
                    blocks.append(Block(f"beta_{i}", "W2", (r, r + p), (c, c + p), kind))
                    i += 1
        # token parts of x2 = [t, p, h1t, h1p, h2t, h2p, h2h1t, h2h1p]
        for i, c in enumerate([0, d0, 2 * d0, 3 * d0], start=1):
            blocks.append(Block(f"gamma_{i}", "W3", (0, t), (c, c + t), "I"))
        return cls(d_tok, d_pos, blocks)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.blocks]

    @property
    def size(self) -> int:
        return len(self.blocks)

    def subset(self, names: Sequence[str]) -> Ansatz:
        """The sub-basis of the named coordinates (e.g. alpha_3, beta_2, gamma_3)."""
        chosen = [b for b in self.blocks if b.name in set(names)]
        if len(chosen) != len(set(names)):
            raise ValueError(f"unknown coordinates {sorted(set(names) - set(self.names))}")
        return Ansatz(self.d_tok, self.d_pos, chosen)

    def _element(self, b: Block) -> dict[str, np.ndarray]:
        e = {k: np.zeros(s) for k, s in self.shapes.items()}
        n = b.rows[1] - b.rows[0]
        block = np.eye(n) if b.kind == "I" else self.M
        e[b.param][b.rows[0]:b.rows[1], b.cols[0]:b.cols[1]] = block
        return e

    def theta(self, params: Params) -> Array:
        """Coordinates [size]: <W, B_k> / ||B_k||^2."""
        dots = sum(jnp.einsum("kij,ij->k", self._stacked[k], params[k]) for k in self.shapes)
        return dots / self.norms2

    def embed(self, theta: Array) -> Params:
        """Weights sum_k theta_k B_k."""
        return {k: jnp.einsum("k,kij->ij", theta, b) for k, b in self._stacked.items()}

    def project(self, params: Params) -> Params:
        """Orthogonal projection of `params` onto the span of the basis."""
        return self.embed(self.theta(params))

    def residual(self, params: Params) -> Params:
        """The component of `params` outside the span."""
        proj = self.project(params)
        return {k: params[k] - proj[k] for k in self.shapes}

    def relative_residual(self, params: Params) -> Array:
        """||residual|| / ||params|| (Frobenius over all weights)."""
        r = self.residual(params)
        return _norm(r) / _norm(params)

    def coords(self, params: Params) -> tuple[Array, Array, Array]:
        """(alpha, beta, gamma) of the induction ansatz, or of the blocks present."""
        th = self.theta(params)
        groups = {g: [i for i, n in enumerate(self.names) if n.startswith(g)]
                  for g in ("alpha", "beta", "gamma")}
        return tuple(th[jnp.asarray(groups[g], jnp.int32)] for g in ("alpha", "beta", "gamma"))


def _norm(tree) -> Array:
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(tree)))


def coordinate_index(name: str) -> int:
    """Index of a named coordinate in the 19-vector (alpha_1 = 0 ... gamma_4 = 18)."""
    group, k = name.split("_")
    return {"alpha": 0, "beta": 3, "gamma": 15}[group] + int(k) - 1


# ================================================================ symmetric population


def finite_group(generators: Sequence[np.ndarray], limit: int = 100_000) -> np.ndarray:
    """All products of orthogonal `generators` (closure), as [order, d, d]."""
    d = generators[0].shape[0]

    def key(m):
        return (np.round(m, 6) + 0.0).tobytes()  # + 0.0 merges -0.0 with 0.0

    elems = {key(np.eye(d)): np.eye(d)}
    frontier = [np.eye(d)]
    while frontier:
        new = []
        for a in frontier:
            for g in generators:
                b = g @ a
                if key(b) not in elems:
                    elems[key(b)] = b
                    new.append(b)
        if len(elems) > limit:
            raise ValueError(f"group larger than {limit} elements")
        frontier = new
    return np.stack(list(elems.values()))


def commutant_dim(group: np.ndarray) -> float:
    """Dimension of the matrices commuting with a real orthogonal representation: <chi, chi>."""
    return float(np.mean(np.einsum("gii->g", group) ** 2))


def token_group(d: int) -> np.ndarray:
    """Signed cyclic permutations of R^d (order d 2^d): commutant = multiples of I."""
    S = np.eye(d)
    S[0, 0] = -1.0
    return finite_group([np.roll(np.eye(d), 1, axis=0), S])


def position_group(n: int) -> np.ndarray:
    """Weyl-Heisenberg group of C^n (shift and clock, order n^3) on R^{2n}.

    For n >= 3 its commutant is span{I, M}: the rotations commuting with M that the
    population is invariant under.
    """

    def real(U):
        R = np.zeros((2 * n, 2 * n))
        for i in range(n):
            for j in range(n):
                z = U[i, j]
                R[2 * i:2 * i + 2, 2 * j:2 * j + 2] = [[z.real, -z.imag], [z.imag, z.real]]
        return R

    shift = np.roll(np.eye(n), 1, axis=0).astype(complex)
    clock = np.diag(np.exp(2j * np.pi * np.arange(n) / n))
    return finite_group([real(shift), real(clock)])


def symmetric_population(n_pairs: int) -> ICLData:
    """The orbit of the canonical sequences under token x position symmetries.

    An exactly isotropic finite population: its mean gradient at any point of the ansatz
    lies in the ansatz, because the commutants of the two groups are span{I} and
    span{I, M} (checked here) and the model is equivariant. Size d 2^d (N+1)^3 N with
    d = 2N: 3456 sequences for N = 2.
    """
    base = canonical_sequences(n_pairs)
    gt, gp = token_group(2 * n_pairs), position_group(n_pairs + 1)
    if round(commutant_dim(gt)) != 1 or round(commutant_dim(gp)) != 2:
        raise ValueError(f"no exact symmetric population for n_pairs={n_pairs} (needs >= 2)")
    tok = np.einsum("gde,jte->gjtd", gt, np.asarray(base.tok))
    target = np.einsum("gde,je->gjd", gt, np.asarray(base.target))
    pos = np.einsum("gde,jte->gjtd", gp, np.asarray(base.pos))
    n_t, n_p, n_q = len(gt), len(gp), n_pairs
    T = tok.shape[2]
    tok = np.broadcast_to(tok[:, None], (n_t, n_p, n_q, T, tok.shape[-1]))
    target = np.broadcast_to(target[:, None], (n_t, n_p, n_q, target.shape[-1]))
    pos = np.broadcast_to(pos[None], (n_t, n_p, n_q, T, pos.shape[-1]))
    return ICLData(*(jnp.asarray(a.reshape(-1, *a.shape[3:]), jnp.float32)
                     for a in (tok, pos, target)))


def train_disentangled(
    data: ICLData, *, steps: int, lr: float, causal: bool = True, params: Params | None = None
) -> tuple[Params, Array, Params]:
    """Full-batch gradient descent on all weights from zero.

    Returns (final params, loss per step [steps], params after each step, leading axis).
    """
    if params is None:
        params = init_disentangled(data.tok.shape[-1], data.pos.shape[-1])
    return _gd_scan(params, data, jnp.float32(lr), steps=steps, causal=causal)


@functools.partial(jax.jit, static_argnames=("steps", "causal"))
def _gd_scan(params, data, lr, *, steps: int, causal: bool):
    def body(p, _):
        loss, g = jax.value_and_grad(mse_loss)(p, data, causal=causal)
        p = jax.tree_util.tree_map(lambda w, gw: w - lr * gw, p, g)
        return p, (loss, p)

    final, (losses, traj) = jax.lax.scan(body, params, None, length=steps)
    return final, losses, traj


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
        jnp.eye(2 * n), jnp.asarray(pos @ pos.T, jnp.float32),
        jnp.asarray(pos @ M @ pos.T, jnp.float32), jnp.asarray(gq),
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
    data: GramData, *, lr: float = 1.0, steps: int | None = None, max_steps: int = 200_000,
    chunk: int = 500, scale: np.ndarray | None = None, batched: bool = False,
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


def fit_loglog(ns: Sequence[float], times: Sequence[float]) -> Fit:
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
    return GramData(p.Gc, p.P, p.PM, jnp.stack([q.gq for q in parts]),
                    jnp.stack([q.target for q in parts]))


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
        data = sets._replace(gq=jnp.concatenate([pop.gq[None], sets.gq]),
                             target=jnp.concatenate([pop.target[None], sets.target]))
        runs = train_reduced(data, lr=lr, max_steps=max_steps, batched=True)
        traj = [Trajectory(runs.loss[i], runs.attention[i], runs.theta[i])
                for i in range(len(seeds) + 1)]
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
        log(f"  N={n}: t_ICL population {out[n]['t_icl_population']:.0f}, seeds "
            f"{out[n]['t_icl']}, {out[n]['steps']} steps, {time.time() - t0:.1f}s")
    return out


# =============================================================== the standard transformer


@dataclasses.dataclass(frozen=True)
class StandardSetup:
    """The standard two-layer attention-only transformer and its induction task."""

    half: int = 8  # L: sequences are r_1..r_L then a rotation of them
    d_vocab: int = 32
    d_model: int = 32
    n_heads: int = 1
    batch: int = 32
    lr: float = 3e-3
    steps: int = 600
    checkpoint_every: int = 20
    init_range: float = 0.1
    seed: int = 0

    def config(self) -> toy.ToyConfig:
        return toy.ToyConfig(
            n_layers=2, d_model=self.d_model, n_heads=self.n_heads,
            d_head=self.d_model // self.n_heads, d_vocab=self.d_vocab, n_ctx=2 * self.half,
            d_mlp=None, normalization=None, init_range=self.init_range,
        )


def induction_batch(key: Array, batch: int, half: int, d_vocab: int) -> tuple[Array, Array]:
    """Repeated random tokens with a random rotation: `r_1..r_L` then `r_{k+1}..r_L r_1..r_k`.

    The rotation k varies per sequence, so the distance to the previous occurrence is not
    fixed and a purely positional head cannot do the task. Returns tokens [batch, 2L] and
    `source` [batch, L-1]: for the query at position L+i, the position right after the
    previous occurrence of its token (the token to copy), or -1 where the second half
    wraps around and induction does not predict the next token.
    """
    k_tok, k_rot = jax.random.split(key)
    r = jax.random.randint(k_tok, (batch, half), 0, d_vocab)
    idx = (jax.random.randint(k_rot, (batch, 1), 0, half) + jnp.arange(half)) % half
    tokens = jnp.concatenate([r, jnp.take_along_axis(r, idx, 1)], 1)
    source = jnp.where(idx[:, :-1] < half - 1, idx[:, :-1] + 1, -1)
    return tokens, source


def induction_loss(params: Params, batch: tuple[Array, Array], cfg: toy.ToyConfig):
    """Cross-entropy and accuracy where induction predicts the next token (second half)."""
    return _masked_ce(toy.forward(params, batch[0], cfg), batch)


def progress_measures(params: Params) -> dict[str, Array]:
    """The paper's Eqs. 20-22 for a two-layer transformer (TransformerLens row convention).

    alpha_3 [h1] = sum_i (p_{i-1} W_K^1)(p_i W_Q^1)^T over positions (previous-token QK);
    beta_2 [h1, h2] = sum_t (t W_V^1 W_O^1 W_K^2)(t W_Q^2)^T over token embeddings
    (K-composition matching a token with the token layer 1 moved); gamma_3 [h2] =
    tr(W_E W_V^2 W_O^2 W_U) (copying). h1, h2 index heads of layers 0 and 1.
    """
    P, E, U = params["pos_embed"]["W_pos"], params["embed"]["W_E"], params["unembed"]["W_U"]
    a0, a1 = params["blocks"][0]["attn"], params["blocks"][1]["attn"]
    alpha = jnp.einsum("ihd,ihd->h", jnp.einsum("im,hmd->ihd", P[:-1], a0["W_K"]),
                       jnp.einsum("im,hmd->ihd", P[1:], a0["W_Q"]))
    ov1 = jnp.einsum("tm,hmd,hdn->htn", E, a0["W_V"], a0["W_O"])  # [h1, vocab, d_model]
    key = jnp.einsum("atn,gnd->agtd", ov1, a1["W_K"])
    query = jnp.einsum("tm,gmd->gtd", E, a1["W_Q"])
    beta = jnp.einsum("agtd,gtd->ag", key, query)
    gamma = jnp.einsum("tm,gmd,gdn,nt->g", E, a1["W_V"], a1["W_O"], U)
    return {"alpha_3": alpha, "beta_2": beta, "gamma_3": gamma}


def _patterns(params: Params, tokens: Array, cfg: toy.ToyConfig) -> tuple[Array, Array, Array]:
    """(logits, layer-0 pattern, layer-1 pattern) of one forward pass."""
    sites = ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    ctx = HookContext({}, capture=sites)
    logits = toy.forward(params, tokens, cfg, hook=ctx)
    return logits, ctx.cache[sites[0]], ctx.cache[sites[1]]


def induction_score(pattern1: Array, source: Array) -> Array:
    """Mean attention of each layer-1 head from a repeated token to the token after its
    previous occurrence [n_heads]; `pattern1` [batch, head, q, k] of layer 1."""
    half = pattern1.shape[-1] // 2
    att = jnp.take_along_axis(pattern1[:, :, half:-1], jnp.maximum(source, 0)[:, None, :, None],
                              -1)[..., 0]
    w = (source >= 0).astype(jnp.float32)[:, None]
    return jnp.sum(att * w, (0, 2)) / jnp.sum(w, (0, 2))


def previous_token_score(pattern0: Array) -> Array:
    """Mean attention of each layer-0 head from position i to i-1 [n_heads]."""
    q = jnp.arange(1, pattern0.shape[-1])
    return pattern0[:, :, q, q - 1].mean(axis=(0, 2))


def _masked_ce(logits: Array, batch: tuple[Array, Array]) -> tuple[Array, Array]:
    tokens, source = batch
    half = tokens.shape[1] // 2
    logits, target = logits[:, half:-1], tokens[:, half + 1:]
    w = (source >= 0).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, target[..., None], -1)[..., 0]
    acc = (jnp.argmax(logits, -1) == target).astype(jnp.float32)
    return jnp.sum(nll * w) / jnp.sum(w), jnp.sum(acc * w) / jnp.sum(w)


def train_standard(setup: StandardSetup, out_dir: Path, *, progress: bool = False) -> dict:
    """Train with `mechjax.training` (checkpoints every k steps) and measure over checkpoints."""
    cfg = setup.config()
    params = toy.init(jax.random.PRNGKey(setup.seed), cfg)
    batch_fn = jax.jit(lambda key: induction_batch(key, setup.batch, setup.half, setup.d_vocab))

    def loss_fn(p, batch, key):
        loss, acc = induction_loss(p, batch, cfg)
        return loss, {"accuracy": acc}

    if (out_dir / "checkpoints").exists():  # this function's own output folder: start afresh
        shutil.rmtree(out_dir / "checkpoints")
    t0 = time.time()
    training.train(
        loss_fn, optax.adam(setup.lr), params, lambda key, step: batch_fn(key),
        steps=setup.steps, seed=setup.seed, out_dir=out_dir,
        checkpoint_every=setup.checkpoint_every, progress=progress, resume=False,
    )
    train_seconds = time.time() - t0
    steps, stack = training.load_checkpoint_stack(out_dir, like=params)
    # the step-0 weights join the stack so every curve starts at initialisation
    stack = jax.tree_util.tree_map(lambda s, p: jnp.concatenate([p[None], s]), stack, params)
    steps = np.concatenate([[0], steps])
    eval_batch = induction_batch(jax.random.PRNGKey(10_000 + setup.seed), 256, setup.half,
                                 setup.d_vocab)

    def measure(p, batch):
        logits, pattern0, pattern1 = _patterns(p, batch[0], cfg)
        loss, acc = _masked_ce(logits, batch)
        return {"loss": loss, "accuracy": acc,
                "induction_score": induction_score(pattern1, batch[1]),
                "previous_token_score": previous_token_score(pattern0),
                **progress_measures(p)}

    over_checkpoints = jax.jit(lambda s, b: training.map_over_checkpoints(measure, s, b))
    m = jax.device_get(over_checkpoints(stack, eval_batch))
    h2 = int(np.argmax(m["induction_score"][-1]))
    h1 = int(np.argmax(m["previous_token_score"][-1]))
    curves = {
        "step": steps.tolist(),
        "loss": m["loss"].tolist(),
        "accuracy": m["accuracy"].tolist(),
        "induction_score": m["induction_score"][:, h2].tolist(),
        "previous_token_score": m["previous_token_score"][:, h1].tolist(),
        "alpha_3": m["alpha_3"][:, h1].tolist(),
        "beta_2": m["beta_2"][:, h1, h2].tolist(),
        "gamma_3": m["gamma_3"][:, h2].tolist(),
    }
    loss = np.asarray(curves["loss"])
    t_drop = _first(loss < 0.5 * loss[0], steps)
    onsets = {k: _first(_reached(np.asarray(curves[k]), 0.1), steps)
              for k in ("gamma_3", "beta_2", "alpha_3")}
    return {
        "setup": dataclasses.asdict(setup), "heads": {"layer0": h1, "layer1": h2},
        "curves": curves, "t_loss_drop": t_drop, "onsets": onsets,
        "train_seconds": train_seconds, "checkpoints": len(steps) - 1,
    }


def _reached(x: np.ndarray, fraction: float) -> np.ndarray:
    """Where x - x_0 has covered `fraction` of its final change, in that change's direction."""
    total = x[-1] - x[0]
    if total == 0:
        return np.zeros_like(x, bool)
    return (x - x[0]) / total >= fraction


def _first(mask: np.ndarray, steps: np.ndarray) -> float:
    return float(steps[np.argmax(mask)]) if mask.any() else float("nan")


# ============================================================================ reproduce


def reproduce(
    out_dir: str | Path,
    *,
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    ns: Sequence[int] | None = None,
    lr: float = 1.0,
    smoke: bool = False,
    log=print,
) -> dict:
    """Run the whole reproduction; write report.md, figures and results.json to `out_dir`.

    Args:
      out_dir: output folder (created).
      quick: the small version (< 5 minutes on 2 CPU cores).
      seeds: seeds of the emergence sweep (default 3 quick, 5 full).
      ns: context lengths N (default 4, 8, 16, 32; full adds 64).
      lr: gradient-descent step on the 19 coordinates (1.0 is stable and matches lr 0.5
        to the step, i.e. gradient flow).
      smoke: a seconds-long run of every stage, for tests (numbers not meaningful).
    Returns:
      The results dict written to results.json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds if seeds is not None else (range(3) if quick else range(5)))
    ns = list(ns if ns is not None else ((4, 8, 16, 32) if quick else (4, 8, 16, 32, 64)))
    t_start = time.time()

    log("Theorem 1: full weights on the symmetric population (N=2)")
    confinement = _confinement(steps=200 if smoke else 300 if quick else 1000)
    log(f"  max relative off-ansatz residual {confinement['max_relative_residual']:.2e}; "
        f"max |full - reduced| coordinate {confinement['max_coordinate_gap']:.2e}")

    log(f"Emergence sweep N={ns}, seeds={seeds}")
    sweep = emergence_sweep(ns, seeds, lr=lr, log=log)
    times = [(n, t) for n in ns for t in sweep[n]["t_icl"]]
    fit = fit_loglog([n for n, _ in times], [t for _, t in times])
    fit_pop = fit_loglog(ns, [sweep[n]["t_icl_population"] for n in ns]) if len(ns) >= 3 else None
    t_pop = {n: sweep[n]["t_icl_population"] for n in ns}
    local = {f"{a}-{b}": math.log(t_pop[b] / t_pop[a]) / math.log(b / a)
             for a, b in itertools.pairwise(ns)}
    order = _order_summary(sweep, ns)
    pca_n = ns[-1]
    ratios, proj = pca(sweep[pca_n]["population"].theta)
    log(f"  slope {fit.slope:.3f} [{fit.slope_ci[0]:.3f}, {fit.slope_ci[1]:.3f}]; "
        f"top-3 PCA variance {ratios[:3].sum():.4f}")
    three = [coordinate_index(k) for k in ("alpha_3", "beta_2", "gamma_3")]
    share = {n: float(np.sum(sweep[n]["population"].theta[-1, three] ** 2)
                      / np.sum(sweep[n]["population"].theta[-1] ** 2)) for n in ns}

    log("Standard transformer (cross-entropy, repeated random tokens)")
    setup = StandardSetup(steps=500 if quick else 1500, checkpoint_every=20 if quick else 25)
    if smoke:
        setup = dataclasses.replace(setup, steps=20, checkpoint_every=10)
    standard = train_standard(setup, out / "standard_run")
    log(f"  loss drop at step {standard['t_loss_drop']:.0f}; onsets {standard['onsets']}")

    figures = _figures(out, sweep, ns, fit, ratios, proj, pca_n, standard)
    results = {
        "paper": "On the Emergence of Induction Heads for In-Context Learning (arXiv 2511.01033)",
        "quick": quick,
        "smoke": smoke,
        "slope": fit.slope,
        "slope_ci": list(fit.slope_ci),
        "slope_ci_method": fit.method,
        "slope_population": None if fit_pop is None else fit_pop.slope,
        "slope_population_ci": None if fit_pop is None else list(fit_pop.slope_ci),
        "local_slopes": local,
        "ns": ns,
        "seeds": seeds,
        "lr": lr,
        "n_sequences_per_seed": {n: n for n in ns},
        "steps": {n: sweep[n]["steps"] for n in ns},
        "t_icl": {n: sweep[n]["t_icl"] for n in ns},
        "t_icl_population": {n: sweep[n]["t_icl_population"] for n in ns},
        "t_attention": {n: sweep[n]["t_attention"] for n in ns},
        "onsets_population": {n: sweep[n]["onsets_population"] for n in ns},
        "emergence_order": order,
        "final_coordinates_population": {
            n: dict(zip(Ansatz.induction(2 * n, 2 * n + 2).names,
                        np.round(sweep[n]["population"].theta[-1], 4).tolist())) for n in ns},
        "pca": {"n_pairs": pca_n, "explained_variance": ratios[:6].tolist(),
                "top3": float(ratios[:3].sum())},
        "three_coordinate_share": share,
        "confinement": confinement,
        "standard": {k: v for k, v in standard.items() if k != "curves"},
        "figures": figures,
        "seconds": time.time() - t_start,
    }
    (out / "standard_curves.json").write_text(json.dumps(standard["curves"]))
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=2))
    (out / "report.md").write_text(_report(results))
    log(f"wrote {out / 'report.md'} in {results['seconds']:.0f}s")
    return results


def _confinement(*, steps: int, lr: float = 1.0, n_pairs: int = 2) -> dict:
    """Train the full weights on the symmetric population; compare with the reduced run."""
    data = symmetric_population(n_pairs)
    ansatz = Ansatz.induction(2 * n_pairs, 2 * n_pairs + 2)
    _, losses, traj = train_disentangled(data, steps=steps, lr=lr)
    rel = jax.jit(jax.vmap(ansatz.relative_residual))(traj)
    full_theta = np.asarray(jax.jit(jax.vmap(ansatz.theta))(traj))
    red = train_reduced(gram_data(n_pairs), lr=lr, steps=steps, scale=ansatz.norms2)
    gap = np.abs(full_theta[:-1] - red.theta[1:]).max()
    return {
        "n_pairs": n_pairs, "population_size": int(data.tok.shape[0]), "steps": steps, "lr": lr,
        "max_relative_residual": float(np.max(rel)),
        "final_relative_residual": float(rel[-1]),
        "max_coordinate_gap": float(gap),
        "loss_start": float(losses[0]), "loss_end": float(losses[-1]),
    }


def _order_summary(sweep: dict, ns: Sequence[int]) -> dict:
    """Which order of onsets of gamma_3, beta_2, alpha_3 was observed, per N and overall."""
    counts: dict[str, int] = {}
    for n in ns:
        for o in [sweep[n]["onsets_population"], *sweep[n]["onsets"]]:
            key = " < ".join(sorted(o, key=lambda k: o[k]))
            counts[key] = counts.get(key, 0) + 1
    return {"counts": counts, "most_common": max(counts, key=counts.get)}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _figures(out: Path, sweep, ns, fit: Fit, ratios, proj, pca_n, standard) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = Ansatz.induction(4, 6).names
    highlight = {"alpha_3": "C3", "beta_2": "C2", "gamma_3": "C0"}
    fig, axes = plt.subplots(1, len(ns), figsize=(4 * len(ns), 3.4), squeeze=False)
    for ax, n in zip(axes[0], ns):
        run = sweep[n]["population"]
        for i, name in enumerate(names):
            if name in highlight:
                ax.plot(run.theta[:, i], color=highlight[name], lw=2, label=name)
            else:
                ax.plot(run.theta[:, i], color="0.75", lw=0.8)
        ax.axvline(sweep[n]["t_icl_population"], color="k", ls=":", lw=1)
        ax2 = ax.twinx()
        ax2.plot(run.loss, color="k", lw=1)
        ax2.set_ylim(0, 0.55)
        ax.set_title(f"N = {n}")
        ax.set_xlabel("GD step")
    axes[0][0].set_ylabel("coordinate (grey: the other 16)")
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "trajectories.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    for n in ns:
        ax.scatter([n] * len(sweep[n]["t_icl"]), sweep[n]["t_icl"], color="C0", s=14)
    grid = np.linspace(min(ns), max(ns), 50)
    ax.plot(grid, np.exp(fit.intercept) * grid ** fit.slope, "C0-",
            label=f"fit slope {fit.slope:.2f} [{fit.slope_ci[0]:.2f}, {fit.slope_ci[1]:.2f}]")
    t_ref = sweep[ns[-1]]["t_icl_population"]
    ax.plot(grid, t_ref * (grid / ns[-1]) ** 2, "k:", label="slope 2")
    ax.set(xscale="log", yscale="log", xlabel="N (pairs in context)", ylabel="t_ICL (steps)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "loglog_fit.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    k = min(8, len(ratios))
    axes[0].bar(np.arange(1, k + 1), ratios[:k])
    axes[0].set(xlabel="principal component", ylabel="variance ratio",
                title=f"PCA of the trajectory, N = {pca_n}")
    axes[1].plot(proj[:, 0], proj[:, 1], lw=1)
    axes[1].set(xlabel="PC1", ylabel="PC2", title=f"top 3: {ratios[:3].sum():.4f}")
    fig.tight_layout()
    fig.savefig(out / "pca.png", dpi=110)
    plt.close(fig)

    c = standard["curves"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(c["step"], c["loss"], "k", label="eval loss")
    ax2 = axes[0].twinx()
    ax2.plot(c["step"], c["induction_score"], "C1", label="induction score")
    ax2.plot(c["step"], c["previous_token_score"], "C4", label="previous-token score")
    ax2.set_ylim(0, 1.05)
    axes[0].set_xlabel("step")
    axes[0].legend(loc="upper right", fontsize=8)
    ax2.legend(loc="center right", fontsize=8)
    for name, color in highlight.items():
        x = np.asarray(c[name])
        dev = x - x[0]
        axes[1].plot(c["step"], dev / max(np.abs(dev).max(), 1e-12), color=color,
                     label=f"{name} (Eq. {20 + ['alpha_3', 'beta_2', 'gamma_3'].index(name)})")
    axes[1].set(xlabel="step", ylabel="change / max |change|", title="progress measures")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "standard_transformer.png", dpi=110)
    plt.close(fig)
    return ["trajectories.png", "loglog_fit.png", "pca.png", "standard_transformer.png"]


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.0f}"


def _report(r: dict) -> str:
    ns = r["ns"]
    lines = [
        "# Emergence of induction heads: reproduction report",
        "",
        f"Paper: {r['paper']}. Mode: {'quick' if r['quick'] else 'full'}; "
        f"runtime {r['seconds']:.0f} s. The reconstruction of the disentangled model and of "
        "the 19-dim ansatz is documented in `mechjax.analyses.induction`.",
        "",
        "## Scaling of the emergence time",
        "",
        f"- Context lengths N = {ns}; seeds {r['seeds']} (each a finite training set of "
        "N sequences with random query indices) plus the exact population (each index once); "
        f"gradient descent on the 19 coordinates from zero with lr {r['lr']}; steps per N: "
        + ", ".join(f"{n}: {r['steps'][n]}" for n in ns) + ".",
        f"- Fitted slope of log t_ICL against log N: **{r['slope']:.3f}**, 95% CI "
        f"[{r['slope_ci'][0]:.3f}, {r['slope_ci'][1]:.3f}] ({r['slope_ci_method']}, "
        f"all N x seed points). Paper: about 2 (t_ICL = Theta(N^2)).",
    ]
    if r["slope_population"] is not None:
        lines.append(f"- Exact population only: slope {r['slope_population']:.3f}, 95% CI "
                     f"[{r['slope_population_ci'][0]:.3f}, {r['slope_population_ci'][1]:.3f}].")
    lines.append("- Local slopes between consecutive N (population): "
                 + ", ".join(f"{k}: {v:.2f}" for k, v in r["local_slopes"].items()) + ".")
    lines += ["", "t_ICL = first step with loss < 0.25 (half the initial loss):", "",
              "| N | population | " + " | ".join(f"seed {s}" for s in r["seeds"])
              + " | attention >= 0.5 (seeds) |",
              "|---|---|" + "---|" * len(r["seeds"]) + "---|"]
    for n in ns:
        lines.append(f"| {n} | {_fmt(r['t_icl_population'][n])} | "
                     + " | ".join(_fmt(t) for t in r["t_icl"][n]) + " | "
                     + ", ".join(_fmt(t) for t in r["t_attention"][n]) + " |")
    lines += ["", "## Emergence order", "",
              "Onset = first step at which a coordinate reaches 10% of its final value "
              "(population runs):", "",
              "| N | gamma_3 | beta_2 | alpha_3 |", "|---|---|---|---|"]
    for n in ns:
        o = r["onsets_population"][n]
        lines.append(f"| {n} | {_fmt(o['gamma_3'])} | {_fmt(o['beta_2'])} | {_fmt(o['alpha_3'])} |")
    oc = r["emergence_order"]["counts"]
    lines += ["", "Observed orders over all runs (population and seeds): "
              + "; ".join(f"{k}: {v}" for k, v in oc.items())
              + ". Paper: gamma_3 < beta_2 < alpha_3.", "",
              "Final coordinates of the population runs (coordinates other than alpha_3, "
              "beta_2, gamma_3 that end far from 0 depart from the paper's picture):", ""]
    for n in ns:
        fc = r["final_coordinates_population"][n]
        big = {k: v for k, v in fc.items() if abs(v) >= 0.1}
        lines.append(f"- N = {n}: " + ", ".join(f"{k} {v:+.2f}" for k, v in big.items()))
    c = r["confinement"]
    p = r["pca"]
    lines += [
        "", "## Theorem 1 and PCA", "",
        f"- Full weights trained from zero on the exactly symmetric population (N = "
        f"{c['n_pairs']}, {c['population_size']} sequences, {c['steps']} steps, lr {c['lr']}): "
        f"largest off-ansatz residual {c['max_relative_residual']:.2e} of the weight norm "
        f"(final {c['final_relative_residual']:.2e}); loss {c['loss_start']:.3f} -> "
        f"{c['loss_end']:.4f}; the full run's 19 coordinates match the reduced run to "
        f"{c['max_coordinate_gap']:.1e}.",
        f"- PCA of the parameter trajectory (N = {p['n_pairs']}, population run, centred): "
        "explained variance " + ", ".join(f"{v:.4f}" for v in p["explained_variance"])
        + f"; top 3: **{p['top3']:.4f}**. Paper: about 3 dominant directions.",
        "- Share of the final squared coordinates in (alpha_3, beta_2, gamma_3), population "
        "runs: " + ", ".join(f"N = {n}: {v:.3f}" for n, v in r["three_coordinate_share"].items())
        + ".",
    ]
    s = r["standard"]
    lines += [
        "", "## Standard two-layer attention-only transformer", "",
        f"- Setup: {s['setup']}; {s['checkpoints']} checkpoints, training "
        f"{s['train_seconds']:.0f} s; heads used: {s['heads']}.",
        f"- Loss drop (eval loss < half its initial value) at step {_fmt(s['t_loss_drop'])}.",
        "- Onset of each progress measure (first checkpoint where its change from step 0 "
        "reaches 10% of its final change): "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in s["onsets"].items())
        + ". Signs and curves: `standard_transformer.png`, `standard_curves.json`.",
        "", "## Figures", "",
    ]
    lines += [f"- `{f}`" for f in r["figures"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`mechjax reproduce induction-emergence --out DIR [--quick]`."""
    ap = argparse.ArgumentParser(
        prog="mechjax reproduce induction-emergence",
        description="Reproduce 'On the Emergence of Induction Heads for In-Context Learning'.",
    )
    ap.add_argument("--out", required=True,
                    help="output folder for report.md, figures and results.json")
    ap.add_argument("--quick", action="store_true",
                    help="small version, under 5 minutes on 2 cores")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="seeds of the emergence sweep")
    ap.add_argument("--ns", type=int, nargs="+", default=None, help="context lengths N")
    ap.add_argument("--lr", type=float, default=1.0, help="GD step on the 19 coordinates")
    ap.add_argument("--smoke", action="store_true", help="seconds-long run of every stage (tests)")
    args = ap.parse_args(argv)
    reproduce(args.out, quick=args.quick, seeds=args.seeds, ns=args.ns, lr=args.lr,
              smoke=args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
