"""Paired cognitive-bias sets (paper 9) and paired statistics."""

import math
import re

import numpy as np
import pytest

from mechjax.evals import biases as B
from mechjax.evals import stats as S


def _carries_by_hand(x: int, y: int, op: str) -> int:
    """Column arithmetic on the digit strings, units column first."""
    xs, ys = str(x).zfill(3)[::-1], str(y).zfill(3)[::-1]
    count, carry = 0, 0
    for dx, dy in zip(xs, ys):
        if op == "+":
            carry = int(int(dx) + int(dy) + carry > 9)
        else:
            carry = int(int(dx) - int(dy) - carry < 0)
        count += carry
    return count


@pytest.mark.parametrize(
    "x, y, op, k",
    [
        (123, 456, "+", 0),
        (158, 227, "+", 1),  # 8 + 7 = 15
        (199, 101, "+", 2),  # 9 + 1 = 10, 9 + 0 + 1 = 10
        (999, 1, "+", 3),
        (579, 234, "-", 0),
        (520, 490, "-", 1),  # 2 - 9 borrows in the tens; 5 - 1 - 4 = 0 does not
        (503, 298, "-", 2),
        (30, 9, "-", 1),
    ],
)
def test_count_carries_hand_cases(x, y, op, k):
    assert B.count_carries(x, y, op) == k
    assert _carries_by_hand(x, y, op) == k


@pytest.mark.parametrize("test", B.TESTS)
def test_pairs_share_the_gold_answer_over_many_seeds(test):
    for seed in range(40):
        for p in B.make_pairs(test, 4, seed=seed):
            assert p.a.answer == p.b.answer == p.answer, (test, seed, p.a.text, p.b.text)
            assert eval(p.a.equation) == p.a.answer  # noqa: S307
            assert eval(p.b.equation) == p.b.answer  # noqa: S307
            assert p.a.text != p.b.text


def test_consistency_pairs_differ_only_in_the_comparison_sentence():
    for p in B.consistency_pairs(100, seed=1):
        sa, sb = p.a.body.split(". "), p.b.body.split(". ")
        assert sa[:-1] == sb[:-1] and sa[-1] != sb[-1]
        assert p.a.question == p.b.question
        assert p.a.operands == p.b.operands
        if p.info["op"] == "*":
            assert "times as many" in sa[-1] or "times the number" in sa[-1]
            assert "1/" in sb[-1]


def test_transfer_comparison_pairs_same_arithmetic():
    for p in B.transfer_comparison_pairs(100, seed=2, n_steps=2):
        assert p.a.relations == ("transfer", "transfer")
        assert p.b.relations == ("comparison", "comparison")
        assert p.a.operands == p.b.operands and p.a.ops == p.b.ops
        assert re.search(r"\b(gave|received|got|handed)\b", p.a.body)
        assert re.search(r"\b(more|fewer)\b", p.b.body)


def test_carry_pairs_differ_in_carries_as_specified():
    pairs = B.carry_pairs(200, seed=3)
    assert {(p.info["op"], p.info["n_carries"]) for p in pairs} == {
        ("+", 1),
        ("-", 1),
        ("+", 2),
        ("-", 2),
    }
    for p in pairs:
        op, k = p.info["op"], p.info["n_carries"]
        (xa, ya), (xb, yb) = p.a.operands, p.b.operands
        assert p.a.ops == p.b.ops == (op,)
        assert all(100 <= v <= 999 for v in (xa, ya, xb, yb))
        assert _carries_by_hand(xa, ya, op) == 0
        assert _carries_by_hand(xb, yb, op) == k
        # same wording except the numbers
        assert re.sub(r"\d+", "#", p.a.text) == re.sub(r"\d+", "#", p.b.text)


def test_unknown_test():
    with pytest.raises(ValueError, match="unknown test"):
        B.make_pairs("speed", 3)


# ---------------------------------------------------------------- paired statistics

scipy_stats = pytest.importorskip("scipy.stats", reason="scipy checks the p-values")


def test_paired_t_matches_scipy():
    rng = np.random.default_rng(0)
    for n in (5, 30, 500):
        a = rng.uniform(0, 1, n) < 0.6
        b = rng.uniform(0, 1, n) < 0.45
        ours = S.paired_t(a, b)
        ref = scipy_stats.ttest_rel(a.astype(float), b.astype(float))
        assert ours.statistic == pytest.approx(ref.statistic, rel=1e-10)
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-14)
        assert ours.df == n - 1


def test_paired_t_hand_case():
    # d = [1, 1, 0, 1]: mean 0.75, sd 0.5, t = 0.75 / (0.5 / 2) = 3, df 3
    r = S.paired_t([1, 1, 1, 1], [0, 0, 1, 0])
    assert r.statistic == pytest.approx(3.0)
    # two-sided p for t = 3, df = 3: 2 * (1 - F(3)); F from the closed form of df = 3
    x = 3 / math.sqrt(3)
    cdf = 0.5 + (x / (1 + x * x) + math.atan(x)) / math.pi
    assert r.p_value == pytest.approx(2 * (1 - cdf), rel=1e-9)
    assert math.isnan(S.paired_t([1, 0, 1], [1, 0, 1]).p_value)
    assert S.paired_t([1, 1, 1], [0, 0, 0]).p_value == 0.0


def test_mcnemar_exact_and_chi2():
    a = np.array([1] * 10 + [0] * 2 + [1] * 5 + [0] * 3, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 5 + [0] * 3, bool)
    exact = S.mcnemar(a, b)
    assert (exact.n10, exact.n01) == (10, 2)
    # two-sided binomial, 12 discordant pairs, 2 in the smaller cell
    assert exact.p_value == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert exact.p_value == pytest.approx(scipy_stats.binomtest(2, 12, 0.5).pvalue)
    chi = S.mcnemar(a, b, exact=False)
    assert chi.statistic == pytest.approx((8 - 1) ** 2 / 12)
    assert chi.p_value == pytest.approx(scipy_stats.chi2.sf((8 - 1) ** 2 / 12, 1))
    assert S.mcnemar([True, False], [True, False]).p_value == 1.0


def test_bootstrap_ci_seeded():
    v = np.arange(100, dtype=float)
    r1 = S.bootstrap_ci(v, seed=0, n_boot=500)
    r2 = S.bootstrap_ci(v, seed=0, n_boot=500)
    assert r1 == r2 and r1.mean == pytest.approx(49.5)
    assert r1.lo < 49.5 < r1.hi
    # the standard error of the mean is 29.01 / 10: the 95% interval is about +-5.7
    assert 4.0 < (r1.hi - r1.lo) / 2 < 7.5
    assert S.bootstrap_ci(v, seed=1, n_boot=500) != r1
    assert S.bootstrap_ci([5.0] * 10, seed=0) == (5.0, 5.0, 5.0)
