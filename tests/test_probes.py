"""Layer-wise probes: parity with scikit-learn (ridge, logistic, softmax, metrics), the
layer with the signal found, one compiled program for new data, control-task selectivity,
probe directions usable as interventions, clear errors.

scikit-learn is the test-time reference only; the library never imports it."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score, r2_score, roc_auc_score

import mechjax as mj
from mechjax import probes as pr
from mechjax.errors import InputError

L, N, D, SIGNAL = 4, 240, 8, 2  # the binary stack shared by most tests (one compile)
LOGISTIC_COEF_RTOL = 1e-2  # max |w - w_sklearn| / max |w_sklearn|, per layer
RIDGE_COEF_RTOL = 1e-4


def _standardised(x_layer, res):
    """The standardisation the probes fit: training rows' mean / std (ddof 0)."""
    xt = x_layer[res.train_idx].astype(np.float64)
    mu, sd = xt.mean(0), np.maximum(xt.std(0), 1e-6)
    return (xt - mu) / sd, (x_layer[res.val_idx] - mu) / sd, sd


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.fixture(scope="module")
def binary():
    """Layer SIGNAL carries a noisy (not separable) linear signal, the others noise."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(L, N, D)) * rng.uniform(0.5, 3.0, size=D) + 1.0
    w = rng.normal(size=D)
    logit = 4.0 * (x[SIGNAL] - 1.0) @ w / np.linalg.norm(w * x[SIGNAL].std(0))
    y = (rng.random(N) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    types = rng.integers(0, 100, N)  # ~2.4 rows per type: control labels near balanced
    return x.astype(np.float32), y, types


@pytest.fixture(scope="module")
def binary_fit(binary):
    x, y, _ = binary
    return pr.logistic(x, y)


# ---------------------------------------------------------------------------- parity


@pytest.mark.parametrize("n,d", [(200, 8), (40, 64)])  # primal and dual (n_train < d)
def test_ridge_equals_sklearn_ridge_on_standardised_data(n, d):
    rng = np.random.default_rng(n)
    x = (rng.normal(size=(3, n, d)) * rng.uniform(0.5, 2.0, size=d) + 0.5).astype(np.float32)
    y = x[1] @ rng.normal(size=d) + rng.normal(size=n)
    res = pr.ridge(x, y)
    assert res.weights.shape == (3, d) and res.intercepts.shape == (3,)
    for l in range(3):
        zt, zv, sd = _standardised(x[l], res)
        ref = Ridge(alpha=float(res.reg[l])).fit(zt, y[res.train_idx])
        assert _rel(res.weights[l] * sd, ref.coef_) < RIDGE_COEF_RTOL
        np.testing.assert_allclose(
            res.predict(x[l][res.val_idx], l), ref.predict(zv), rtol=1e-4, atol=1e-4
        )
        assert res.val["r2"][l] == pytest.approx(
            r2_score(y[res.val_idx], ref.predict(zv)), abs=1e-4
        )
    assert res.best_layer == 1 and res.val["r2"][1] > 0.5


def test_logistic_equals_sklearn_logistic_regression(binary, binary_fit):
    x, y, _ = binary
    res = binary_fit
    assert res.weights.shape == (L, D) and res.intercepts.shape == (L,)
    for l in range(L):
        zt, zv, sd = _standardised(x[l], res)
        ref = LogisticRegression(C=float(res.reg[l]), max_iter=1000, tol=1e-8)
        ref.fit(zt, y[res.train_idx])
        assert _rel(res.weights[l] * sd, ref.coef_[0]) < LOGISTIC_COEF_RTOL
        assert res.val["accuracy"][l] == pytest.approx(ref.score(zv, y[res.val_idx]), abs=1e-6)
        pred = res.predict(x[l][res.val_idx], l)
        assert np.array_equal(pred, ref.predict(zv))
        # the in-program metrics equal scikit-learn's on the same scores
        scores = res.decision(x[l][res.val_idx], l)
        assert res.val["auroc"][l] == pytest.approx(roc_auc_score(y[res.val_idx], scores), abs=1e-5)
        assert res.val["balanced_accuracy"][l] == pytest.approx(
            balanced_accuracy_score(y[res.val_idx], pred), abs=1e-6
        )


def test_softmax_accuracy_equals_sklearn_multinomial():
    rng = np.random.default_rng(3)
    n, d = 240, 6
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(2, n, d))
    x[1, :, :3] += 1.2 * np.eye(3)[y]
    x = x.astype(np.float32)
    res = pr.logistic(x, y + 10)  # labels need not be 0..k-1
    assert res.classes is not None and res.classes.tolist() == [10, 11, 12]
    assert res.weights.shape == (2, d, 3)
    for l in range(2):
        zt, zv, _ = _standardised(x[l], res)
        ref = LogisticRegression(C=float(res.reg[l]), max_iter=1000).fit(zt, y[res.train_idx])
        n_val = len(res.val_idx)
        assert abs(res.val["accuracy"][l] - ref.score(zv, y[res.val_idx])) * n_val <= 1 + 1e-6
        proba = ref.predict_proba(zv)
        if l == 1:
            assert res.val["auroc"][l] == pytest.approx(
                roc_auc_score(y[res.val_idx], proba, multi_class="ovr"), abs=0.02
            )
    assert res.best_layer == 1
    with pytest.raises(InputError, match="pass cls="):
        res.direction(1)
    assert res.direction(1, cls=0).shape == (d,)


def test_metrics_equal_sklearn_including_ties():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    s = np.round(y * 0.5 + rng.normal(size=300), 1)  # many tied scores
    assert pr.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert pr.auroc(y, np.zeros(300)) == pytest.approx(0.5)
    y3 = rng.integers(0, 3, 300)
    table = np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5], [0.2, 0.2, 0.6]])
    pick = np.where(rng.random(300) < 0.5, y3, rng.integers(0, 4, 300))
    s3 = table[pick]  # probabilities with many ties
    assert pr.auroc(y3, s3) == pytest.approx(
        roc_auc_score(y3, s3, multi_class="ovr", average="macro"), abs=1e-6
    )
    pred = rng.integers(0, 3, 300)
    assert pr.balanced_accuracy(y3, pred) == pytest.approx(balanced_accuracy_score(y3, pred))
    assert pr.accuracy(y3, pred) == pytest.approx(np.mean(y3 == pred))
    t = rng.normal(size=50)
    p = t + rng.normal(size=50)
    assert pr.r2(t, p) == pytest.approx(r2_score(t, p))


# ---------------------------------------------------------------------------- layers


def test_the_layer_with_the_signal_is_best(binary_fit):
    acc = binary_fit.val["accuracy"]
    assert binary_fit.best_layer == SIGNAL
    assert acc[SIGNAL] > 0.9
    others = np.delete(acc, SIGNAL)
    assert np.all(np.abs(others - 0.5) < 0.2), acc
    assert binary_fit.reg.shape == (L,) and binary_fit.val_grid.shape == (L, 4)


def test_new_data_of_the_same_shape_does_not_retrace(binary, binary_fit):
    x, y, _ = binary
    before = pr.TRACE_COUNT["logistic"]
    rng = np.random.default_rng(9)
    pr.logistic(x + rng.normal(size=x.shape).astype(np.float32), rng.permutation(y))
    assert pr.TRACE_COUNT["logistic"] == before
    r0 = pr.TRACE_COUNT["ridge"]
    pr.ridge(x, rng.normal(size=N))
    pr.ridge(x * 2.0, rng.normal(size=N))
    assert pr.TRACE_COUNT["ridge"] - r0 <= 1


def test_split_is_deterministic_and_stratified():
    labels = np.repeat([0, 1, 2], [40, 20, 40])
    tr, va = pr.split(100, val_fraction=0.25, seed=1, stratify=labels)
    tr2, va2 = pr.split(100, val_fraction=0.25, seed=1, stratify=labels)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert sorted(np.concatenate([tr, va])) == list(range(100))
    assert np.bincount(labels[va]).tolist() == [10, 5, 10]


def test_standardise_uses_training_rows_only():
    rng = np.random.default_rng(5)
    xt = rng.normal(size=(2, 50, 3)) * 3 + 2
    xv = rng.normal(size=(2, 10, 3)) + 100
    zt, zv, mu, sd = (np.asarray(a) for a in pr.standardise(xt, xv))
    np.testing.assert_allclose(zt.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(zt.std(1), 1, atol=1e-5)
    np.testing.assert_allclose(
        zv, (xv - xt.mean(1, keepdims=True)) / xt.std(1, keepdims=True), rtol=1e-5
    )
    const = np.ones((1, 5, 2))
    assert np.all(np.asarray(pr.standardise(const, const)[3]) == pytest.approx(1e-6))


# ---------------------------------------------------------------------------- control tasks


def test_selectivity_is_positive_when_the_features_carry_the_signal(binary):
    x, y, types = binary
    ctl = pr.control_labels(types, 2, seed=0)
    for t in np.unique(types):
        assert len(np.unique(ctl[types == t])) == 1
    sel = pr.selectivity(x, y, types, n_control_classes=2)
    assert sel.selectivity[SIGNAL] > 0.2 and int(np.argmax(sel.selectivity)) == SIGNAL
    assert sel.task_accuracy[SIGNAL] > 0.9
    np.testing.assert_allclose(sel.selectivity, sel.task_accuracy - sel.control_accuracy)


# ---------------------------------------------------------------------------- directions


def test_direction_aligns_with_class_means_and_projects_out(binary, binary_fit):
    x, y, _ = binary
    u = binary_fit.direction(SIGNAL)
    assert u.shape == (D,) and np.linalg.norm(u) == pytest.approx(1.0, abs=1e-5)
    diff = x[SIGNAL][y == 1].mean(0) - x[SIGNAL][y == 0].mean(0)
    assert float(u @ diff) > 0
    acts = np.random.default_rng(6).normal(size=(1, 3, D)).astype(np.float32)
    out = np.asarray(mj.project(u).apply(jnp.asarray(acts), "blocks.0.hook_resid_post"))
    np.testing.assert_allclose(out @ u, 0.0, atol=1e-5)
    assert np.abs(acts @ u).max() > 1e-2


def test_stack_layers():
    h = {f"blocks.{i}.hook_resid_post": np.full((5, 3), i, np.float32) for i in range(3)}
    st = pr.stack_layers(h, ["blocks.2.hook_resid_post", "blocks.0.hook_resid_post"])
    assert st.shape == (2, 5, 3) and st[0, 0, 0] == 2
    with pytest.raises(
        InputError, match=r"'blocks\.7\.hook_resid_post' was not harvested.*blocks\.0"
    ):
        pr.stack_layers(h, ["blocks.7.hook_resid_post"])


# ---------------------------------------------------------------------------- errors


def test_errors_name_what_is_wrong():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 20, 3)).astype(np.float32)
    y = np.arange(20) % 2
    with pytest.raises(InputError, match="19 labels but acts have 20 examples"):
        pr.logistic(x, y[:19])
    with pytest.raises(InputError, match="19 labels but acts have 20 examples"):
        pr.ridge(x, y[:19].astype(float))
    with pytest.raises(InputError, match=r"single class \(1 for all 20"):
        pr.logistic(x, np.ones(20, int))
    with pytest.raises(InputError, match=r"\[n_layers, n_examples, d\], got shape \(20, 3\)"):
        pr.ridge(x[0], y.astype(float))
    bad = x.copy()
    bad[1, 4, 2] = np.nan
    with pytest.raises(InputError, match="layer 1, example 4, feature 2"):
        pr.logistic(bad, y)
    with pytest.raises(InputError, match="leaves 1 validation rows"):
        pr.ridge(x[:, :4], np.arange(4.0))
    with pytest.raises(InputError, match="types has 3 labels"):
        pr.selectivity(x, y, np.arange(3))


# ---------------------------------------------------------------------------- explicit splits


def test_explicit_indices_fit_only_those_rows(binary):
    x, y, _ = binary
    tr, va = np.arange(0, 120), np.arange(120, 180)  # rows 180.. held out
    res = pr.logistic(x, y, indices=(tr, va))
    assert (res.train_idx == tr).all() and (res.val_idx == va).all()
    # the held-out rows do not move the fit: changing their labels gives the same weights
    y2 = y.copy()
    y2[180:] = 1 - y2[180:]
    res2 = pr.logistic(x, y2, indices=(tr, va))
    np.testing.assert_array_equal(res.weights, res2.weights)
    # ridge the same way
    r = pr.ridge(x, y.astype(float), indices=(tr, va))
    assert (r.val_idx == va).all()


def test_proba_matches_decision_and_predict(binary, binary_fit):
    x, _, _ = binary
    p = binary_fit.proba(x[SIGNAL, :10], SIGNAL)
    assert p.shape == (10, 2)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    z = binary_fit.decision(x[SIGNAL, :10], SIGNAL)
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-z)), rtol=1e-12)
    assert (binary_fit.classes[p.argmax(1)] == binary_fit.predict(x[SIGNAL, :10], SIGNAL)).all()


def test_bad_indices_are_refused(binary):
    x, y, _ = binary
    with pytest.raises(InputError, match="both train and val"):
        pr.logistic(x, y, indices=(np.arange(0, 100), np.arange(90, 150)))
    with pytest.raises(InputError, match=r"must be in \[0, 240\)"):
        pr.logistic(x, y, indices=(np.arange(0, 100), np.arange(200, 250)))
    with pytest.raises(InputError, match="single class"):
        pr.logistic(
            x,
            np.r_[np.zeros(100, int), np.ones(N - 100, int)],
            indices=(np.arange(100), np.arange(100, 200)),
        )


def test_a_validation_label_training_never_saw_counts_as_wrong(binary):
    x, y, _ = binary
    tr, va = np.arange(0, 120), np.arange(120, 180)
    y3 = y.copy()
    y3[170:180] = 2  # a third class only in validation rows
    res = pr.logistic(x, y3, indices=(tr, va))
    assert list(res.classes) == [0, 1]
    pred = res.predict(x[SIGNAL, va], SIGNAL)
    assert res.val["accuracy"][SIGNAL] == pytest.approx((pred == y3[va]).mean(), abs=1e-6)


# ---------------------------------------------------------------------------- digit probes


def test_digits_units_first_and_refuses_what_it_cannot_hold():
    np.testing.assert_array_equal(
        pr.digits(np.array([907, 15, 0]), 3), [[7, 0, 9], [5, 1, 0], [0, 0, 0]]
    )
    with pytest.raises(InputError, match="more than 3 digits"):
        pr.digits(np.array([1000]), 3)
    with pytest.raises(InputError, match=">= 0"):
        pr.digits(np.array([-1]), 3)


@pytest.fixture(scope="module")
def digit_data():
    """Two-digit 'predicted' values and 'gold' values that differ from them on a third of
    the rows. Layer 0 is noise; layer 1 carries both: features 0..19 one-hot the predicted
    digits, 20..39 the gold digits (plus noise). Both probe sets are fitted once (one
    compiled program: same shapes, ten classes)."""
    rng = np.random.default_rng(3)
    n, d = 300, 40
    pred = rng.integers(0, 100, n)
    gold = pred.copy()
    wrong = rng.random(n) < 0.33
    gold[wrong] = (pred[wrong] + rng.integers(1, 10, wrong.sum())) % 100
    x = rng.normal(size=(2, n, d)) * 0.5
    for off, v in ((0, pred), (20, gold)):
        dg = pr.digits(v, 2)
        for j in range(2):
            x[1, np.arange(n), off + dg[:, j] + 10 * j] += 4.0
    x = x.astype(np.float32)
    tr, va = np.arange(0, 180), np.arange(180, 240)
    p_pred = pr.digit_probes(x, pred, 2, indices=(tr, va), steps=60)
    p_gold = pr.digit_probes(x, gold, 2, indices=(tr, va), steps=60)
    return x, pred, gold, tr, va, p_pred, p_gold


def test_digit_probes_read_the_digits_at_the_right_layer(digit_data):
    x, pred, gold, tr, va, p_pred, p_gold = digit_data
    test = np.arange(240, 300)
    for probes, values in ((p_pred, pred), (p_gold, gold)):
        acc = probes.accuracy(x, values, test)
        assert acc.shape == (2, 2)
        assert acc[1].min() > 0.95 and acc[0].max() < 0.35  # chance 0.1
    probs = p_pred.proba(x[1, test], 1)
    assert probs.shape == (60, 2, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-9)


def test_disagreement_flags_rows_whose_two_readings_differ(digit_data):
    x, pred, gold, tr, va, p_pred, p_gold = digit_data
    test = np.arange(240, 300)
    score, flag = pr.disagreement(p_pred, p_gold, x[1, test], 1)
    err = pred[test] != gold[test]
    assert pr.accuracy(err, flag) > 0.9
    assert pr.auroc(err, score) > 0.9
    assert ((score >= 0) & (score <= 1)).all()
    # at the noise layer the two readings carry nothing about the errors
    s0, _ = pr.disagreement(p_pred, p_gold, x[0, test], 0)
    assert pr.auroc(err, s0) < 0.8


def test_digit_probe_errors(digit_data):
    x, pred, _, tr, va, p_pred, _ = digit_data
    with pytest.raises(InputError, match="nothing to decode"):
        pr.digit_probes(x, pred % 10, 2, indices=(tr, va))  # the tens digit is always 0
    with pytest.raises(InputError, match="has 5 labels but acts have 300"):
        pr.digit_probes(x, pred[:5], 2, indices=(tr, va))
    d3 = pr.DigitProbes(p_pred.probes + p_pred.probes[:1])
    with pytest.raises(InputError, match="predicted probes read 2 digits, gold probes 3"):
        pr.disagreement(p_pred, d3, x[1, :4], 1)
