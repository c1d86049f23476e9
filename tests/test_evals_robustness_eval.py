"""The robustness profile with scripted distributions: a perfect reasoner and a text-driven one."""

import math
import zlib

import numpy as np
import pytest

from mechjax.evals import robustness_eval as RE

MAX_N = 60


def _lookup(pairs):
    return {
        RE.default_prompt(x.base.text): x.base.answer for rows in pairs.values() for x in rows
    } | {RE.default_prompt(x.alt.text): x.alt.answer for rows in pairs.values() for x in rows}


def test_perfect_reasoner_is_sensitive_and_robust():
    pairs = RE.profile_pairs(6, seed=0, lo=2, hi=6)
    gold = _lookup(pairs)
    eps = 0.1 / MAX_N  # 0.9 on the gold result, the rest spread evenly over 60 numbers

    def probs(prompt):
        p = np.full(MAX_N + 1, eps)
        p[gold[prompt]] = 0.9
        return p

    prof = RE.profile(pairs, MAX_N, probs_fn=probs, n_boot=100)
    assert set(prof) == {"tce_n", "dce_n", "dce_s", "tce_t"}
    for est in ("dce_n", "dce_s"):
        assert prof[est]["mean"] == pytest.approx(0.0, abs=1e-12)
        assert prof[est]["prediction_changed"] == 0.0
    for est in ("tce_n", "tce_t"):
        # 1/2 [(0.9 - eps) / eps + (0.9 - eps) / eps] for every pair
        assert prof[est]["mean"] == pytest.approx((0.9 - eps) / eps)
        assert prof[est]["prediction_changed"] == 1.0
        assert prof[est]["ci"] == pytest.approx([(0.9 - eps) / eps] * 2)
    assert all(v["n"] + v["n_skipped"] == 6 for v in prof.values())


def test_text_driven_model_has_a_surface_effect():
    pairs = RE.profile_pairs(6, seed=1, lo=2, hi=6)

    def probs(prompt):  # ignores the numbers: a distribution drawn from the text
        rng = np.random.default_rng(zlib.crc32(prompt.encode()))
        return rng.dirichlet(np.ones(MAX_N + 1))

    prof = RE.profile(pairs, MAX_N, probs_fn=probs, n_boot=100)
    assert prof["dce_s"]["mean"] > 0.1 and prof["dce_n"]["mean"] > 0.1
    assert prof["dce_s"]["ci"][0] <= prof["dce_s"]["mean"] <= prof["dce_s"]["ci"][1]


def test_out_of_range_results_are_counted_not_scored():
    pairs = RE.profile_pairs(3, seed=2, lo=2, hi=6)
    prof = RE.profile(pairs, 0, probs_fn=lambda s: np.ones(1))
    for v in prof.values():
        assert v["n"] == 0 and v["n_skipped"] == 3 and math.isnan(v["mean"])
    with pytest.raises(ValueError, match="model or a probs_fn"):
        RE.profile(pairs, MAX_N)
