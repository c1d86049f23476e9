"""Paired statistics for paired problem sets, and percentile bootstrap intervals.

- `paired_t`: the paired t-test on per-item scores (e.g. 0/1 correctness of the two
  problems of each pair), as `scipy.stats.ttest_rel` computes it (two-sided p from
  Student's t with n - 1 degrees of freedom). The cognitive-bias study (Opedal, Stolfo
  et al. 2024) reports this test.
- `mcnemar`: McNemar's test on paired 0/1 outcomes: exact (two-sided binomial on the
  discordant pairs) or the chi-square form with continuity correction.
- `bootstrap_ci`: a percentile bootstrap interval of a statistic, with an explicit seed.

Pure Python and numpy: Student's t tail comes from the regularized incomplete beta
function, evaluated by its continued fraction; no scipy needed.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from mechjax.evals.calibration import Flags, Numbers

__all__ = [
    "BootstrapCI",
    "McNemar",
    "PairedT",
    "bootstrap_ci",
    "mcnemar",
    "paired_t",
    "student_t_sf",
]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for num in (even, odd):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


class PairedT(NamedTuple):
    statistic: float
    p_value: float
    df: int
    mean_diff: float


def paired_t(a: Numbers | Flags, b: Numbers | Flags) -> PairedT:
    """Paired t-test of mean(a - b) = 0, two-sided.

    All differences equal: t = +-inf and p = 0 if they are non-zero, t = p = nan if
    they are all zero (as scipy).
    """
    x = np.asarray(a, np.float64).reshape(-1)
    y = np.asarray(b, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} and {y.size}")
    if x.size < 2:
        raise ValueError("the paired t-test needs at least 2 pairs")
    d = x - y
    n = d.size
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        if mean == 0.0:
            return PairedT(math.nan, math.nan, n - 1, 0.0)
        return PairedT(math.copysign(math.inf, mean), 0.0, n - 1, mean)
    t = mean / (sd / math.sqrt(n))
    p = min(1.0, 2.0 * student_t_sf(abs(t), float(n - 1)))
    return PairedT(t, p, n - 1, mean)


class McNemar(NamedTuple):
    """`n01`: pairs with a wrong and b right; `n10`: a right and b wrong."""

    statistic: float
    p_value: float
    n01: int
    n10: int


def mcnemar(a: Flags, b: Flags, *, exact: bool = True) -> McNemar:
    """McNemar's test of paired 0/1 outcomes `a`, `b` (two-sided).

    exact: the statistic is min(n01, n10) and p = min(1, 2 P(X <= min)) for X ~
    Binomial(n01 + n10, 1/2). Otherwise the statistic is (|n01 - n10| - 1)^2 / (n01 + n10)
    and p its chi-square (1 df) tail. With no discordant pair, p = 1.
    """
    x = np.asarray(a, bool).reshape(-1)
    y = np.asarray(b, bool).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} and {y.size}")
    n01 = int((~x & y).sum())
    n10 = int((x & ~y).sum())
    m = n01 + n10
    if m == 0:
        return McNemar(0.0, 1.0, 0, 0)
    if exact:
        k = min(n01, n10)
        cdf = sum(math.comb(m, i) for i in range(k + 1)) / 2.0**m
        return McNemar(float(k), min(1.0, 2.0 * cdf), n01, n10)
    chi2 = (abs(n01 - n10) - 1.0) ** 2 / m
    return McNemar(chi2, math.erfc(math.sqrt(chi2 / 2.0)), n01, n10)


class BootstrapCI(NamedTuple):
    mean: float
    lo: float
    hi: float


def bootstrap_ci(
    values: Numbers | Flags,
    *,
    seed: int,
    n_boot: int = 1000,
    level: float = 0.95,
    statistic: Callable[[np.ndarray], float] = np.mean,
) -> BootstrapCI:
    """Percentile bootstrap interval of `statistic(values)` (resampling items).

    `seed` is required: the same seed gives the same interval. NaN values are dropped
    before resampling (e.g. a ratio with a zero denominator).
    """
    v = np.asarray(values, np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return BootstrapCI(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, (n_boot, v.size))
    stats = np.asarray([statistic(v[i]) for i in idx], np.float64)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return BootstrapCI(float(statistic(v)), float(lo), float(hi))
