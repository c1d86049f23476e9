"""Measures of the causal robustness framework (Stolfo, Jin et al., ACL 2023).

All functions are pure numpy over P, the model's distribution over the candidate
numbers on the base problem, and P', the same on the intervened problem (one row per
problem pair: `[batch, n]`, or `[n]` for one pair). Row index k is the number
`values[k]` (default: k itself, i.e. candidates 0..max_n as in the paper).

- `restricted_distribution`: P(R) = softmax of the logits restricted to the number
  tokens; `number_distribution`: the multi-token form, P(n) proportional to
  exp(mean log-prob of n's tokens) (the reference code's `get_distribution_multitoken`).
- change in prediction, both definitions: `prediction_changed` = 1[argmax P != argmax
  P'] (the paper's delta_cp, as we read it) and `prediction_distance` = |argmax P -
  argmax P'| in number units (the reference code's `causal_effect`);
- `relative_confidence_change` (result changes, types 1b and 4):
  1/2 [(P(r) - P'(r)) / P'(r) + (P'(r') - P(r')) / P(r')];
- `confidence_change` (result fixed, types 2 and 3):
  max((P(r) - P'(r)) / P'(r), (P'(r) - P(r)) / P(r));
- `odds_ratio_change`: P(r) P'(r') / (P(r') P'(r)) - 1, what the reference code stores
  under the name `relative_confidence_change`;
- `js_divergence` (natural log), `total_variation`, `d_inf`, `error_change`;
- `estimate`: mean and bootstrap interval of one estimand (`ESTIMANDS`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import numpy as np
from jaxtyping import ArrayLike, Float, Int

from mechjax.evals.stats import bootstrap_ci

__all__ = [
    "ESTIMANDS",
    "Estimate",
    "confidence_change",
    "d_inf",
    "error_change",
    "estimate",
    "js_divergence",
    "number_distribution",
    "odds_ratio_change",
    "prediction_changed",
    "prediction_distance",
    "relative_confidence_change",
    "restricted_distribution",
    "total_variation",
]

Probs = Union[Float[ArrayLike, "*batch n"], Sequence[float], Sequence[Sequence[float]]]
Index = Union[Int[ArrayLike, "*batch"], int, Sequence[int]]

# estimand -> (intervention type, does the gold result change)
ESTIMANDS = {
    "tce_n": ("1b", True),  # two operands changed, result changes: sensitivity to N
    "dce_n": ("2", False),  # all operands changed, result fixed: N -> R not via G
    "dce_s": ("3", False),  # surface text changed: robustness to S
    "tce_t": ("4", True),  # operation changed: sensitivity to T
}


def _p(x: Probs) -> np.ndarray:
    p = np.asarray(x, np.float64)
    if p.ndim == 0:
        raise ValueError("a distribution needs at least one axis [n]")
    return p


def _at(p: np.ndarray, idx: Index) -> np.ndarray:
    i = np.broadcast_to(np.asarray(idx, np.int64), p.shape[:-1])
    return np.asarray(np.take_along_axis(p, i[..., None], -1)[..., 0])


def restricted_distribution(
    logits: Float[ArrayLike, "*batch d_vocab"], candidate_ids: Index
) -> np.ndarray:
    """Softmax over `logits[..., candidate_ids]` only (single-token numbers)."""
    x = np.asarray(logits, np.float64)[..., np.asarray(candidate_ids, np.int64)]
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def number_distribution(token_logprobs: Sequence[Sequence[float]]) -> np.ndarray:
    """P over candidate numbers from each one's token log-probs: softmax of their means.

    `token_logprobs[k]` holds log P(t_j | prompt, t_<j) of the tokens of number k (one
    entry for a single-token number), e.g. from a teacher-forced run per candidate.
    """
    if any(len(lp) == 0 for lp in token_logprobs):
        raise ValueError("every candidate number needs at least one token log-prob")
    means = np.asarray([np.mean(np.asarray(lp, np.float64)) for lp in token_logprobs])
    means = means - means.max()
    e = np.exp(means)
    return e / e.sum()


def _argmax_value(p: np.ndarray, values) -> np.ndarray:
    k = np.asarray(p.argmax(-1))
    return k if values is None else np.asarray(np.asarray(values)[k])


def prediction_changed(p: Probs, q: Probs) -> np.ndarray:
    """1.0 where argmax P != argmax P' (per pair)."""
    return np.asarray((_p(p).argmax(-1) != _p(q).argmax(-1)), np.float64)


def prediction_distance(p: Probs, q: Probs, values: Sequence[int] | None = None) -> np.ndarray:
    """|argmax P - argmax P'| in number units (`values[k]` is row index k's number)."""
    return np.asarray(
        np.abs(_argmax_value(_p(p), values) - _argmax_value(_p(q), values)), np.float64
    )


def relative_confidence_change(p: Probs, q: Probs, r: Index, r_alt: Index) -> np.ndarray:
    """1/2 [(P(r) - P'(r)) / P'(r) + (P'(r') - P(r')) / P(r')] (indices into the rows)."""
    p, q = _p(p), _p(q)
    pr, qr, pa, qa = _at(p, r), _at(q, r), _at(p, r_alt), _at(q, r_alt)
    return np.asarray(0.5 * ((pr - qr) / qr + (qa - pa) / pa), np.float64)


def confidence_change(p: Probs, q: Probs, r: Index) -> np.ndarray:
    """max((P(r) - P'(r)) / P'(r), (P'(r) - P(r)) / P(r)): 0 iff P(r) = P'(r)."""
    pr, qr = _at(_p(p), r), _at(_p(q), r)
    return np.asarray(np.maximum((pr - qr) / qr, (qr - pr) / pr), np.float64)


def odds_ratio_change(p: Probs, q: Probs, r: Index, r_alt: Index) -> np.ndarray:
    """P(r) P'(r') / (P(r') P'(r)) - 1 (the reference code's "relative_confidence_change")."""
    p, q = _p(p), _p(q)
    return np.asarray(_at(p, r) * _at(q, r_alt) / (_at(p, r_alt) * _at(q, r)) - 1.0, np.float64)


def _kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a > 0, a * np.log(a / b), 0.0)
    return np.asarray(terms.sum(-1), np.float64)


def js_divergence(p: Probs, q: Probs) -> np.ndarray:
    """Jensen-Shannon divergence 1/2 KL(P||M) + 1/2 KL(P'||M), M = (P + P')/2, in nats."""
    p, q = _p(p), _p(q)
    m = 0.5 * (p + q)
    return np.asarray(0.5 * (_kl(p, m) + _kl(q, m)), np.float64)


def total_variation(p: Probs, q: Probs) -> np.ndarray:
    """1/2 sum |P - P'|."""
    return np.asarray(0.5 * np.abs(_p(p) - _p(q)).sum(-1), np.float64)


def d_inf(p: Probs, q: Probs) -> np.ndarray:
    """max_k |log P(k) - log P'(k)|."""
    p, q = _p(p), _p(q)
    return np.asarray(np.abs(np.log(p) - np.log(q)).max(-1), np.float64)


def error_change(
    p: Probs, q: Probs, r: Index, r_alt: Index | None = None, values: Sequence[int] | None = None
) -> np.ndarray:
    """| |argmax P - r| - |argmax P' - r'| | (r' = r when the result is fixed)."""
    r_alt = r if r_alt is None else r_alt
    err_p = np.abs(_argmax_value(_p(p), values) - np.asarray(r))
    err_q = np.abs(_argmax_value(_p(q), values) - np.asarray(r_alt))
    return np.asarray(np.abs(err_p - err_q), np.float64)


class Estimate(NamedTuple):
    """Mean effect over pairs with its percentile bootstrap interval."""

    estimand: str
    mean: float
    ci: tuple[float, float]
    n: int
    changed: float  # fraction of pairs whose prediction changed


def estimate(
    estimand: str,
    p: Probs,
    q: Probs,
    r: Index,
    r_alt: Index | None = None,
    *,
    seed: int,
    n_boot: int = 1000,
    level: float = 0.95,
) -> Estimate:
    """One estimand of `ESTIMANDS` over a batch of pairs.

    TCEs use `relative_confidence_change` (needs `r_alt`), DCEs `confidence_change`.
    Pairs whose effect is not finite (a zero probability) are left out of the mean and
    of n.
    """
    if estimand not in ESTIMANDS:
        raise ValueError(f"unknown estimand {estimand!r}; known: {sorted(ESTIMANDS)}")
    _, result_changes = ESTIMANDS[estimand]
    if result_changes:
        if r_alt is None:
            raise ValueError(f"{estimand} compares two results: pass r_alt")
        eff = relative_confidence_change(p, q, r, r_alt)
    else:
        eff = confidence_change(p, q, r)
    eff = np.atleast_1d(eff)
    eff = eff[np.isfinite(eff)]
    ci = bootstrap_ci(eff, seed=seed, n_boot=n_boot, level=level)
    changed = float(np.mean(prediction_changed(p, q)))
    return Estimate(estimand, ci.mean, (ci.lo, ci.hi), int(eff.size), changed)
