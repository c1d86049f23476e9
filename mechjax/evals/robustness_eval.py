"""The robustness profile of a model: TCE and DCE per estimand (Stolfo, Jin et al. 2023).

For each estimand of `robustness.ESTIMANDS` (tce_n: type 1b, dce_n: type 2, dce_s:
type 3, tce_t: type 4), P and P' are the model's distributions over the numbers
0..max_n on the base and the intervened problem; the effect of a pair is the relative
confidence change (result changes) or the confidence change (result fixed), and the
estimand is their mean with a percentile bootstrap interval. A model is *sensitive*
when its TCEs are high and *robust* when its DCEs are low.

`profile` takes any `probs_fn(prompt) -> P` (default: `number_probs.number_probs_batch`
of a model over every prompt of an estimand at once). Pairs whose gold results lie outside 0..max_n
cannot be scored on the restricted distribution; they are counted in `n_skipped`.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from mechjax.evals import robustness as R
from mechjax.evals.robustness_pairs import InterventionPair, intervention_pairs

__all__ = ["default_prompt", "profile", "profile_pairs"]


def default_prompt(problem: str) -> str:
    return f"Q: {problem}\nA: The answer (arabic numerals) is"


def profile_pairs(
    n: int, seed: int = 0, n_steps: int = 1, *, lo: int = 2, hi: int = 20
) -> dict[str, list[InterventionPair]]:
    """`n` pairs per estimand, of the intervention type the estimand needs."""
    return {
        est: intervention_pairs(kind, n, seed + k, n_steps, lo=lo, hi=hi)
        for k, (est, (kind, _)) in enumerate(sorted(R.ESTIMANDS.items()))
    }


def profile(
    pairs: Mapping[str, Sequence[InterventionPair]],
    max_n: int,
    *,
    probs_fn: Callable[[str], np.ndarray] | None = None,
    model=None,
    prompt: Callable[[str], str] = default_prompt,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, dict]:
    """{estimand: {"mean", "ci": [lo, hi], "n", "n_skipped", "prediction_changed"}}."""
    if probs_fn is None and model is None:
        raise ValueError("pass a model or a probs_fn")
    out = {}
    for est, rows in pairs.items():
        if est not in R.ESTIMANDS:
            raise ValueError(f"unknown estimand {est!r}; known: {sorted(R.ESTIMANDS)}")
        ok = [p for p in rows if 0 <= p.base.answer <= max_n and 0 <= p.alt.answer <= max_n]
        if not ok:
            nan = float("nan")
            out[est] = {"mean": nan, "ci": [nan, nan], "n": 0, "n_skipped": len(rows)}
            out[est]["prediction_changed"] = nan
            continue
        texts = [prompt(x.base.text) for x in ok] + [prompt(x.alt.text) for x in ok]
        if probs_fn is None:  # every prompt of the estimand in one batched, cached run
            from mechjax.evals.number_probs import number_probs_batch

            pq = number_probs_batch(model, texts, list(range(max_n + 1)))
        else:
            pq = np.stack([probs_fn(t) for t in texts])
        p, q = pq[: len(ok)], pq[len(ok) :]
        r = [x.base.answer for x in ok]
        r_alt = [x.alt.answer for x in ok]
        e = R.estimate(est, p, q, r, r_alt, seed=seed, n_boot=n_boot)
        out[est] = {
            "mean": e.mean,
            "ci": [e.ci[0], e.ci[1]],
            "n": e.n,
            "n_skipped": len(rows) - len(ok),
            "prediction_changed": e.changed,
        }
    return out
