"""The minimal ICL task, the disentangled two-layer transformer, the 19-dim ansatz and
the symmetric population of Theorem 1 (see the package docstring for the reconstruction)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = dict[str, Any]  # nested: blocks are a list of dicts


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
        self._stacked = {
            k: np.stack([e[k] for e in self._basis]).astype(np.float32) for k in self.shapes
        }

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
        e[b.param][b.rows[0] : b.rows[1], b.cols[0] : b.cols[1]] = block
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
        groups = {
            g: [i for i, n in enumerate(self.names) if n.startswith(g)]
            for g in ("alpha", "beta", "gamma")
        }
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
                R[2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = [[z.real, -z.imag], [z.imag, z.real]]
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
    return ICLData(
        *(jnp.asarray(a.reshape(-1, *a.shape[3:]), jnp.float32) for a in (tok, pos, target))
    )


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
