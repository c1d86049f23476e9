"""Humanity's Last Exam's metrics (Phan et al. 2025): accuracy, Wald interval, RMS
calibration error.

As HLE's judge script computes them (`dump_metrics` and `calib_err` of its evaluation
code, the latter taken from the outlier-exposure code of Hendrycks et al.):

- accuracy = 100 * (number correct) / n, with n = *all* questions: a question without an
  answer counts as wrong;
- Wald 95% half-width = 1.96 * sqrt(acc * (100 - acc) / n), acc in percent;
- calibration error: sort by confidence, cut into bins of `beta` = 100 consecutive items
  (the last bin absorbs the remainder), cerr^2 = sum_b |B_b|/n (mean conf_b - mean acc_b)^2,
  reported as 100 * sqrt(cerr^2).

HLE's loop runs over `range(len(bins) - 1)`, so it never visits the last bin
(`skip_last=True`, the faithful port). Consequences: with fewer than 2 * beta items the
error is 0 whatever the answers; with n items at 100% confidence all wrong, the value is
100 * sqrt(1 - |B_last| / n), not 100. `skip_last=False` is the fixed variant. With fewer
than `beta` items HLE's code fails (it indexes an empty bin list); here the faithful
variant raises `ValueError` and the fixed one uses a single bin.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence, Union

import numpy as np
from jaxtyping import ArrayLike, Bool, Float, Int

# per-item values as arrays or plain lists (type-checked at run time in the tests)
Numbers = Union[Float[ArrayLike, " n"], Int[ArrayLike, " n"], Sequence[float], Sequence[int]]
Flags = Union[Bool[ArrayLike, " n"], Sequence[bool]]

__all__ = [
    "CalibrationBins",
    "Flags",
    "Numbers",
    "accuracy",
    "calibration_bins",
    "calibration_error",
    "wald_interval",
]


def accuracy(correct: Flags, n: int | None = None) -> float:
    """100 * sum(correct) / n, in percent; `n` defaults to len(correct).

    Pass `n` = the number of questions when `correct` holds only the answered ones: the
    unanswered ones then count as wrong, as in HLE.
    """
    c = np.asarray(correct, bool).reshape(-1)
    n = c.size if n is None else int(n)
    if n <= 0:
        raise ValueError("accuracy of zero questions is undefined")
    if c.size > n:
        raise ValueError(f"{c.size} judged answers but only n={n} questions")
    return 100.0 * float(c.sum()) / n


def wald_interval(acc_percent: float, n: int, z: float = 1.96) -> float:
    """The Wald half-width z * sqrt(acc (100 - acc) / n), in percentage points."""
    if n <= 0:
        raise ValueError("the Wald interval needs n > 0")
    a = float(acc_percent)
    return z * math.sqrt(max(a * (100.0 - a), 0.0) / n)


class CalibrationBins(NamedTuple):
    """The bins `calibration_error` uses, in confidence order.

    `edges[i] = (start, end)` index the items sorted by confidence; `mean_conf` and
    `mean_acc` are per bin (in [0, 1]); `used[i]` says whether the bin enters the sum.
    """

    edges: list[tuple[int, int]]
    mean_conf: np.ndarray
    mean_acc: np.ndarray
    used: np.ndarray


def calibration_bins(
    confidence: Numbers,
    correct: Flags,
    beta: int = 100,
    *,
    skip_last: bool = True,
) -> CalibrationBins:
    """HLE's bins of `beta` consecutive items by confidence (confidence in [0, 1])."""
    conf = np.asarray(confidence, np.float64).reshape(-1)
    corr = np.asarray(correct, np.float64).reshape(-1)
    if conf.shape != corr.shape:
        raise ValueError(f"confidence {conf.shape} and correct {corr.shape} differ in shape")
    if beta < 1:
        raise ValueError(f"beta must be >= 1, got {beta}")
    n = conf.size
    if (conf < 0).any() or (conf > 1).any():
        raise ValueError("confidence must be in [0, 1] (divide percentages by 100)")
    n_bins = n // beta
    if n_bins == 0:
        if skip_last:
            raise ValueError(
                f"HLE's calibration error needs at least beta={beta} items, got {n} "
                "(its code fails there); use skip_last=False for one bin"
            )
        n_bins = 1 if n else 0
    # a stable sort, as numpy's default quicksort is not: ties keep their input order
    order = np.argsort(conf, kind="stable")
    conf, corr = conf[order], corr[order]
    edges = [(i * beta, (i + 1) * beta) for i in range(n_bins)]
    if edges:
        edges[-1] = (edges[-1][0], n)
    mean_conf = np.asarray([conf[a:b].mean() for a, b in edges])
    mean_acc = np.asarray([corr[a:b].mean() for a, b in edges])
    used = np.ones(len(edges), bool)
    if skip_last and edges:
        used[-1] = False
    return CalibrationBins(edges, mean_conf, mean_acc, used)


def calibration_error(
    confidence: Numbers,
    correct: Flags,
    beta: int = 100,
    *,
    skip_last: bool = True,
    p: str = "2",
) -> float:
    """RMS calibration error in percent (0..100) with bins of `beta` items.

    Args:
      confidence: stated confidence per item in [0, 1].
      correct: whether each item was judged correct.
      beta: items per bin (HLE: 100).
      skip_last: True = HLE's loop (the last bin is never summed); False = every bin.
      p: "2" (RMS, HLE's choice), "1" (weighted mean absolute gap) or "max".

    HLE reports `100 * round(cerr, 2)`; this returns 100 * cerr unrounded (round it
    yourself to compare with HLE's printed numbers).
    """
    b = calibration_bins(confidence, correct, beta, skip_last=skip_last)
    n = sum(e - s for s, e in b.edges)
    gaps = np.abs(b.mean_conf - b.mean_acc)[b.used]
    sizes = np.asarray([e - s for s, e in b.edges], np.float64)[b.used]
    if p == "2":
        value = math.sqrt(float((sizes / n * gaps**2).sum())) if n else 0.0
    elif p == "1":
        value = float((sizes / n * gaps).sum()) if n else 0.0
    elif p in ("max", "infty", "infinity"):
        value = float(gaps.max()) if gaps.size else 0.0
    else:
        raise ValueError(f"p must be '1', '2' or 'max', got {p!r}")
    return 100.0 * value
