"""The toy part of the DAS reproduction (analyses/das/toy.py): the high-level model and
its counterfactual pairs by hand. DAS on the trained smoke-size toy (s found at the right
site, nothing at the wrong site or for the wrong variable) is checked by the
reproduction's smoke test in test_das_repro.py, which trains it."""

import numpy as np
import pytest

from mechjax.analyses.das import toy as T


@pytest.fixture(scope="module")
def cm():
    return T.causal_model(*T.tables(0))


def test_latin_squares_and_the_causal_model(cm):
    t1, t2 = T.tables(0)
    for t in (t1, t2):
        assert t.shape == (10, 10)
        # every column and every row is a permutation of the digits
        np.testing.assert_array_equal(np.sort(t, axis=0), np.tile(np.arange(10)[:, None], 10))
        np.testing.assert_array_equal(np.sort(t, axis=1), np.tile(np.arange(10), (10, 1)))
    assert not np.array_equal(t1, t2)
    base, source = {"a": 3, "b": 7, "c": 1}, {"a": 5, "b": 0, "c": 8}
    s_b, s_s = int(t1[3, 7]), int(t1[5, 0])
    assert cm.run(base) == {"a": 3, "b": 7, "c": 1, "s": s_b, "y": int(t2[s_b, 1])}
    # swapping s takes the source's s and keeps the base's c; swapping an input recomputes
    assert cm.counterfactual(base, source, "s") == t2[s_s, 1]
    assert cm.counterfactual(base, source, "c") == t2[s_b, 8]
    assert cm.counterfactual(base, source, "a") == t2[t1[5, 7], 1]
    assert cm.counterfactual(base, source, "b") == t2[t1[3, 0], 1]


@pytest.mark.parametrize("variable", ["s", "c", "a"])
def test_pairs_labels_positions_and_held_out(cm, variable):
    t1, t2 = T.tables(0)
    train = T.counterfactual_pairs(cm, variable, 300, seed=4)
    test = T.counterfactual_pairs(cm, variable, 200, seed=5, exclude=train)
    for d, n in ((train, 300), (test, 200)):
        assert len(d) == n and d.base.shape == (n, 3) and d.base.dtype == np.int32
        assert d.base_mask.all() and d.source_mask.all()
        assert (d.base_positions == T.S_POS).all() and (d.source_positions == T.S_POS).all()
        np.testing.assert_array_equal(d.base, d.info["base_inputs"])
        a, b, c = d.base.T
        sa, sb, sc = d.source.T
        s_base, s_src = t1[a, b], t1[sa, sb]
        np.testing.assert_array_equal(d.base_labels, t2[s_base, c])
        want = {
            "s": t2[s_src, c],
            "c": t2[s_base, sc],
            "a": t2[t1[sa, b], c],
        }[variable]
        np.testing.assert_array_equal(d.labels, want)
        # the swapped variable always differs, so the label always changes (Latin squares)
        assert d.info["changes"].all() and (d.labels != d.base_labels).all()
    codes = lambda d: set(map(tuple, np.concatenate([d.base, d.source], 1).tolist()))
    assert not codes(train) & codes(test)
    moved = T.at_position(test, T.POSITIONS["a"])
    assert (moved.base_positions == 0).all() and (moved.source_positions == 0).all()
    np.testing.assert_array_equal(moved.labels, test.labels)
