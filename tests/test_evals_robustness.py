"""Causal robustness measures (paper 4) and its intervention types on generated problems."""

import math
import re

import numpy as np
import pytest

from mechjax.evals import robustness as R
from mechjax.evals import robustness_pairs as RP

P = np.array([0.5, 0.3, 0.2])
Q = np.array([0.2, 0.5, 0.3])


def test_hand_computed_measures():
    assert R.prediction_changed(P, Q) == 1.0
    assert R.prediction_changed(P, P) == 0.0
    assert R.prediction_distance(P, Q) == 1.0
    assert R.prediction_distance(P, Q, values=[3, 5, 8]) == 2.0
    assert R.relative_confidence_change(P, Q, 0, 1) == pytest.approx(0.5 * (0.3 / 0.2 + 0.2 / 0.3))
    assert R.confidence_change(P, Q, 0) == pytest.approx(1.5)
    assert R.confidence_change(Q, P, 0) == pytest.approx(1.5)  # symmetric by its max
    assert R.odds_ratio_change(P, Q, 0, 1) == pytest.approx(0.5 * 0.5 / (0.3 * 0.2) - 1)
    assert R.total_variation(P, Q) == pytest.approx(0.3)
    kl_pm = 0.5 * math.log(0.5 / 0.35) + 0.3 * math.log(0.3 / 0.4) + 0.2 * math.log(0.2 / 0.25)
    kl_qm = 0.2 * math.log(0.2 / 0.35) + 0.5 * math.log(0.5 / 0.4) + 0.3 * math.log(0.3 / 0.25)
    assert R.js_divergence(P, Q) == pytest.approx(0.5 * (kl_pm + kl_qm))
    assert R.d_inf(P, Q) == pytest.approx(math.log(2.5))
    assert R.error_change(P, Q, 0, 1) == 0.0  # both runs predict their own result
    assert R.error_change(P, Q, 0) == 1.0  # fixed result 0: errors 0 and 1


def test_measures_are_batched():
    p = np.stack([P, Q, P])
    q = np.stack([Q, Q, P])
    np.testing.assert_allclose(R.prediction_changed(p, q), [1, 0, 0])
    np.testing.assert_allclose(R.confidence_change(p, q, [0, 1, 2]), [1.5, 0.0, 0.0])
    np.testing.assert_allclose(R.total_variation(p, q), [0.3, 0, 0], atol=1e-12)
    np.testing.assert_allclose(R.js_divergence(p, q)[1:], [0, 0], atol=1e-12)


def test_js_matches_scipy():
    dist = pytest.importorskip("scipy.spatial.distance", reason="scipy checks the JS value")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.dirichlet(np.ones(10)), rng.dirichlet(np.ones(10))
        assert R.js_divergence(a, b) == pytest.approx(dist.jensenshannon(a, b) ** 2)


def test_confidence_change_zero_iff_equal():
    rng = np.random.default_rng(1)
    a, b = rng.dirichlet(np.ones(6), 200), rng.dirichlet(np.ones(6), 200)
    assert (R.confidence_change(a, b, 2) > 0).all()
    assert np.allclose(R.confidence_change(a, a, 2), 0)


def test_distributions():
    logits = np.array([[0.0, math.log(2.0), 5.0, 0.0]])
    np.testing.assert_allclose(R.restricted_distribution(logits, [0, 1, 3]), [[0.25, 0.5, 0.25]])
    # number 0: one token at log 0.5; number 1: two tokens, mean log = log 0.25
    p = R.number_distribution([[math.log(0.5)], [math.log(0.5), math.log(0.125)]])
    np.testing.assert_allclose(p, [2 / 3, 1 / 3])
    with pytest.raises(ValueError):
        R.number_distribution([[0.0], []])


def test_estimate_with_bootstrap():
    p = np.stack([P, P, Q, Q])
    q = np.stack([Q, Q, P, Q])
    e = R.estimate("dce_n", p, q, [0, 0, 0, 0], seed=0, n_boot=200)
    # confidence changes at r = 0: 1.5, 1.5, 1.5 (max form), 0
    assert e.mean == pytest.approx(1.125)
    assert e.n == 4 and e.changed == pytest.approx(0.75)
    assert e.ci[0] <= e.mean <= e.ci[1]
    assert R.estimate("dce_n", p, q, [0] * 4, seed=0, n_boot=200) == e
    t = R.estimate("tce_n", p[:1], q[:1], [0], [1], seed=0, n_boot=50)
    assert t.mean == pytest.approx(0.5 * (0.3 / 0.2 + 0.2 / 0.3))
    with pytest.raises(ValueError, match="r_alt"):
        R.estimate("tce_t", p, q, [0] * 4, seed=0)
    with pytest.raises(ValueError, match="unknown estimand"):
        R.estimate("ate", p, q, [0] * 4, seed=0)


# ---------------------------------------------------------------- intervention pairs


@pytest.mark.parametrize("n_steps", [1, 2])
@pytest.mark.parametrize("kind", RP.INTERVENTIONS)
def test_intervention_pairs_over_seeds(kind, n_steps):
    for seed in range(8):
        for pr in RP.intervention_pairs(kind, 10, seed=seed, n_steps=n_steps):
            b, a = pr.base, pr.alt
            assert eval(b.equation) == b.answer and eval(a.equation) == a.answer  # noqa: S307
            assert (b.answer != a.answer) is pr.result_changes, (kind, b.text, a.text)
            assert b.text != a.text
            changed = [i for i, (x, y) in enumerate(zip(b.operands, a.operands)) if x != y]
            if kind == "1b":
                assert len(changed) == 2 and pr.result_changes
            elif kind == "2":
                assert len(changed) == n_steps + 1 and not pr.result_changes
            elif kind == "4":
                assert changed == [] and pr.result_changes
                assert sum(x != y for x, y in zip(b.ops, a.ops)) == 1
            else:  # surface text and the irrelevant sentences keep the numbers
                assert changed == [] and b.ops == a.ops and not pr.result_changes
            if kind.startswith("irrelevant"):
                assert a.body.count(". ") == b.body.count(". ") + 1
                extra = len(re.findall(r"\d+", a.body)) - len(re.findall(r"\d+", b.body))
                assert extra == (1 if kind == "irrelevant_number" else 0)
            if kind == "3":
                assert a.world.agent != b.world.agent


def test_intervention_pairs_reproduce():
    a = [p.alt.text for p in RP.intervention_pairs("2", 5, seed=4, n_steps=2)]
    b = [p.alt.text for p in RP.intervention_pairs("2", 5, seed=4, n_steps=2)]
    assert a == b
    with pytest.raises(ValueError, match="unknown intervention"):
        RP.intervention_pairs("5", 1)
