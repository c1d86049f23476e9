"""Dense SAE latents (Sun, Stolfo, Engels et al. 2025, "Dense SAE latents are features,
not bugs"): which latents are dense, whether they come in antipodal pairs, whether the
dense subspace is a property of the activations, and what the dense latents track.

- `antipodality(sae)`: s_i = max_{j != i} cos(W_enc_i, W_enc_j) * cos(W_dec_i, W_dec_j)
  (encoder columns, decoder rows), and the partner j. A pair reconstructing +v and -v of
  one direction has both cosines near -1, so s near +1.
- `dense_subspace(sae, latents)`: an orthonormal basis of the span of their decoder
  rows; `ablate(x, basis)` projects it out, x - (x Q) Q^T; `sparse_control` draws
  sparse latents whose span has the same dimension (the matched control of the
  retraining experiment).
- Detectors, each a per-latent score and the paper's threshold:
  `position_scores` (Spearman rho of activation with token position, |rho| > 0.4),
  `null_space_scores` (fraction of the decoder direction's norm in the span of the
  `k` left singular vectors of the unembedding with the smallest singular values,
  > 0.2), `alphabetic_scores` (the share of the 100 tokens the latent's direct logit
  effect boosts most that start with the most common first letter, >= 0.9),
  `pc1_scores` (|cos| between the decoder direction and the activations' first
  principal component, > 0.75).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from mechjax.errors import InputError
from mechjax.sae.architectures import SAE
from mechjax.typing import Array

__all__ = [
    "Antipodality",
    "ablate",
    "alphabetic_scores",
    "antipodality",
    "dense_subspace",
    "null_space_scores",
    "pc1",
    "pc1_scores",
    "position_scores",
    "sparse_control",
    "spearman",
]

# Thresholds of the paper (as transcribed; see the module docstring).
POSITION_RHO = 0.4
NULL_SPACE_ALIGNMENT = 0.2
ALPHABETIC_SHARE = 0.9
PC1_COS = 0.75


class Antipodality(NamedTuple):
    score: np.ndarray  # [d_sae]
    partner: np.ndarray  # [d_sae] the j attaining the max
    enc_cos: np.ndarray  # [d_sae] cos(W_enc_i, W_enc_partner)
    dec_cos: np.ndarray  # [d_sae] cos(W_dec_i, W_dec_partner)


def _unit(w: Array, axis: int) -> Array:
    return w / jnp.maximum(jnp.linalg.norm(w, axis=axis, keepdims=True), 1e-12)


@jax.jit
def _antipodal_block(enc: Array, dec: Array, rows: Array) -> tuple[Array, Array, Array, Array]:
    ce = enc[rows] @ enc.T  # [b, d_sae]
    cd = dec[rows] @ dec.T
    s = ce * cd
    s = jnp.where(jnp.arange(enc.shape[0])[None, :] == rows[:, None], -jnp.inf, s)
    j = jnp.argmax(s, -1)
    pick = lambda m: jnp.take_along_axis(m, j[:, None], -1)[:, 0]
    return pick(s), j, pick(ce), pick(cd)


def antipodality(sae: SAE, block: int = 1024) -> Antipodality:
    """Each latent's antipodality score and partner, in blocks of `block` rows (memory
    O(block * d_sae))."""
    enc = _unit(sae.W_enc.T, -1)  # [d_sae, d_in]
    dec = _unit(sae.W_dec, -1)
    n = enc.shape[0]
    parts = []
    for s in range(0, n, block):
        rows = jnp.arange(s, s + block) % n  # fixed block shape: one compiled program
        parts.append(jax.device_get(_antipodal_block(enc, dec, rows)))
    cat = lambda i: np.concatenate([p[i] for p in parts])[:n]
    return Antipodality(cat(0), cat(1), cat(2), cat(3))


def dense_subspace(sae: SAE, latents: Any, tol: float = 1e-4) -> np.ndarray:
    """Orthonormal basis [d_out, r] of the span of the latents' decoder rows (r = the
    span's numerical rank: singular values above `tol` times the largest)."""
    idx = np.asarray(latents, np.int64)
    if idx.size == 0:
        return np.zeros((sae.d_out, 0), np.float32)
    w = np.asarray(sae.W_dec, np.float64)[idx]  # [n, d]
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    r = int((s > tol * s.max()).sum())
    return vt[:r].T.astype(np.float32)


def ablate(x: Float[Array, "*batch d"], basis: Float[Array, "d r"]) -> Float[Array, "*batch d"]:
    """x with the span of `basis` (orthonormal columns) projected out."""
    basis = jnp.asarray(basis, x.dtype)
    return x - (x @ basis) @ basis.T


def sparse_control(
    sae: SAE,
    density: Any,
    rank: int,
    *,
    max_density: float = 0.01,
    exclude_above: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse latents (0 < density <= `max_density`) drawn at random, added until their
    decoder span has dimension `rank`; returns (latents, basis [d, rank]). When too few
    are that sparse, the sparsest live latents at or below `exclude_above` are used."""
    d = np.asarray(density)
    live = np.flatnonzero((d > 0) & (d <= exclude_above))
    pool = live[d[live] <= max_density]
    if len(pool) < rank:
        pool = live[np.argsort(d[live], kind="stable")[: 2 * rank]]
    if len(pool) < rank:
        raise InputError(
            f"only {len(pool)} live latents with density <= {exclude_above}; the control needs {rank}"
        )
    order = np.random.default_rng(seed).permutation(pool)
    chosen: list[int] = []
    for i in order:
        chosen.append(int(i))
        if len(chosen) >= rank and dense_subspace(sae, chosen).shape[1] >= rank:
            break
    basis = dense_subspace(sae, chosen)[:, :rank]
    return np.asarray(chosen), basis


# ------------------------------------------------------------------------- detectors


def _avg_rank(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, tied values sharing their average rank."""
    order = np.argsort(v, kind="mergesort")
    sv = v[order]
    new = np.r_[True, sv[1:] != sv[:-1]]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(v)]
    ranks = np.empty(len(v), np.float64)
    ranks[order] = ((starts + ends - 1) / 2.0 + 1.0)[np.cumsum(new) - 1]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rho of each column of `a [n, m]` with `b [n]` (average ranks for ties);
    0 for a constant column."""
    a = np.asarray(a, np.float64).reshape(len(b), -1)
    ra = np.stack([_avg_rank(a[:, j]) for j in range(a.shape[1])], 1)
    rb = _avg_rank(np.asarray(b, np.float64))
    ra = ra - ra.mean(0)
    rb = rb - rb.mean()
    num = rb @ ra
    den = np.sqrt((ra**2).sum(0) * (rb**2).sum())
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def position_scores(latents: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Spearman rho of each latent's activation `latents [n, m]` with token position."""
    return spearman(np.asarray(latents, np.float64), np.asarray(positions, np.float64))


def unembed(model) -> np.ndarray:
    """The effective unembedding [d_model, d_vocab]: `W_U` with the final RMSNorm's weight
    folded in (what a residual direction's direct logit effect goes through)."""
    p = model.params
    w_u = np.asarray(p["unembed"]["W_U"], np.float64)
    ln = p.get("ln_final") or {}
    if ln.get("w") is not None:
        w = np.asarray(ln["w"], np.float64)
        if model.family.name.startswith("gemma"):  # Gemma's RMSNorm scales by (1 + w)
            w = 1.0 + w
        w_u = w[:, None] * w_u
    return w_u


def null_space_scores(directions: np.ndarray, w_u: np.ndarray, k: int = 10) -> np.ndarray:
    """Fraction of each direction's squared norm (`directions [m, d]`) in the span of the
    `k` left singular vectors of `w_u [d, vocab]` with the smallest singular values."""
    u, _, _ = np.linalg.svd(np.asarray(w_u, np.float64), full_matrices=False)
    null = u[:, -k:]
    dirs = np.asarray(directions, np.float64)
    return ((dirs @ null) ** 2).sum(-1) / np.maximum((dirs**2).sum(-1), 1e-30)


def _first_letter(s: str) -> str:
    s = s.replace("Ġ", " ").replace("▁", " ").strip().lower()
    return s[0] if s and s[0].isalpha() else ""


def alphabetic_scores(
    directions: np.ndarray, w_u: np.ndarray, token_strings: Sequence[str], top: int = 100
) -> tuple[np.ndarray, list[str]]:
    """For each direction, the share of its `top` most boosted tokens (direct logit
    effect direction @ w_u) whose text starts with the most common letter among them, and
    that letter. Tokens without a leading letter count against the share."""
    logits = np.asarray(directions, np.float64) @ np.asarray(w_u, np.float64)
    idx = np.argsort(-logits, axis=-1)[:, :top]
    shares, letters = [], []
    for row in idx:
        first = [_first_letter(token_strings[int(i)]) for i in row]
        counts: dict[str, int] = {}
        for c in first:
            if c:
                counts[c] = counts.get(c, 0) + 1
        letter = max(counts, key=lambda c: counts[c]) if counts else ""
        shares.append(counts.get(letter, 0) / len(row))
        letters.append(letter)
    return np.asarray(shares), letters


def pc1(x: np.ndarray) -> np.ndarray:
    """The first principal component (unit vector) of rows `x [n, d]`."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return vt[0]


def pc1_scores(directions: np.ndarray, x: np.ndarray) -> np.ndarray:
    """|cos| of each direction `[m, d]` with the first principal component of `x`."""
    v = pc1(x)
    dirs = np.asarray(directions, np.float64)
    return np.abs(dirs @ v) / np.maximum(np.linalg.norm(dirs, axis=-1), 1e-30)
