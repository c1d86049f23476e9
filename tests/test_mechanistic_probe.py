"""MechanisticProbe: the kNN and F1 equal scikit-learn's, the k-th smallest labels equal the
reference's label generator, features from one harvest pass, head entropy and masking,
and clear errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import f1_score
from sklearn.neighbors import KNeighborsClassifier

import mechjax as mj
from mechjax import harvest as hv
from mechjax import mechanistic_probe as mp
from mechjax.errors import InputError
from mechjax.io.families import family_of_module
from mechjax.models import gpt2


@pytest.fixture(scope="module")
def tiny_gpt2() -> mj.Model:
    cfg = gpt2.Config(d_model=32, n_layers=3, n_heads=4, d_head=8, d_mlp=64, d_vocab=40, n_ctx=12)
    return mj.Model(gpt2.init(jax.random.PRNGKey(0), cfg, scale=0.3), cfg, family_of_module("gpt2"))


# ------------------------------------------------------------------ kNN and F1 vs sklearn


def _data_with_duplicates(seed: int, n_train: int = 120, n_test: int = 60, d: int = 3):
    rng = np.random.RandomState(seed)
    x_train = rng.rand(n_train, d).astype(np.float32)
    x_train[10:14] = x_train[:4]  # exact duplicate training rows (labels may differ)
    x_test = rng.rand(n_test, d).astype(np.float32)
    x_test[:15] = x_train[rng.choice(14, 15)]  # queries at distance 0 from training rows
    return x_train, x_test, rng


def _untied(x_train, x_test, k: int = 8) -> np.ndarray:
    """Queries whose k-th and (k+1)-th nearest training rows are at different distances:
    which of rows tied at the k-th place is kept is the tree search's choice in
    scikit-learn, the lower index here."""
    d = np.sqrt(((x_test[:, None].astype(np.float64) - x_train[None]) ** 2).sum(-1))
    d.sort(axis=1)
    return d[:, k - 1] != d[:, k]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn_equals_sklearn_distance_weighted_with_duplicates(seed):
    x_train, x_test, rng = _data_with_duplicates(seed)
    y_train = rng.randint(0, 3, len(x_train))
    ref = KNeighborsClassifier(n_neighbors=8, weights="distance").fit(x_train, y_train)
    ours = mp.knn_predict(x_train, y_train, x_test, n_neighbors=8)
    keep = _untied(x_train, x_test)
    assert keep.sum() >= len(x_test) - 4 and keep[:15].sum() >= 12  # exact matches checked
    np.testing.assert_array_equal(ours[keep], ref.predict(x_test)[keep])
    # an exact match with two training rows of different labels is a tie: smallest class
    x_tie, y_tie = np.array([[0.0], [0.0], [5.0]]), np.array([2, 1, 1])
    ref = KNeighborsClassifier(n_neighbors=3, weights="distance").fit(x_tie, y_tie)
    assert mp.knn_predict(x_tie, y_tie, np.zeros((1, 1)), n_neighbors=3)[0] == 1
    assert ref.predict(np.zeros((1, 1)))[0] == 1


def test_knn_multi_output_equals_sklearn():
    x_train, x_test, rng = _data_with_duplicates(3)
    y_train = np.stack([np.ones(len(x_train), int), rng.randint(0, 2, len(x_train))], 1)
    ref = KNeighborsClassifier(n_neighbors=8, weights="distance").fit(x_train, y_train)
    ours = mp.knn_predict(x_train, y_train, x_test)
    assert ours.shape == (len(x_test), 2)
    keep = _untied(x_train, x_test)
    np.testing.assert_array_equal(ours[keep], ref.predict(x_test)[keep])


@pytest.mark.parametrize("seed", [0, 1])
def test_f1_macro_equals_sklearn_multiclass_and_multilabel(seed):
    rng = np.random.RandomState(seed)
    t, p = rng.randint(0, 4, 50), rng.randint(0, 4, 50)
    p[p == 3] = 2  # a label only in y_true
    assert math.isclose(mp.f1_macro(t, p), f1_score(t, p, average="macro"), abs_tol=1e-12)
    tb, pb = rng.randint(0, 2, 40), rng.randint(0, 2, 40)
    assert math.isclose(mp.f1_macro(tb, pb), f1_score(tb, pb, average="macro"), abs_tol=1e-12)
    # the P2 form: column 0 constant 1, column 1 "is root"
    tm = np.stack([np.ones(40, int), tb], 1)
    pm = np.stack([np.ones(40, int), pb], 1)
    want = f1_score(tm, pm, average="macro")
    assert math.isclose(mp.f1_macro(tm, pm), want, abs_tol=1e-12)
    assert math.isclose(want, (1 + f1_score(tb, pb)) / 2, abs_tol=1e-12)


def test_two_fold_split_as_the_reference():
    """Reference split: rows cut at n_examples // 2; both folds scored and averaged."""
    rng = np.random.RandomState(0)
    feats = rng.rand(20, 6, 2).astype(np.float32)
    y = rng.randint(0, 2, (20, 6))
    rows = np.ones((20, 6), bool)
    x, t = feats.reshape(-1, 2), y.ravel()
    want = []
    for tr, te in ((slice(0, 10), slice(10, None)), (slice(10, None), slice(0, 10))):
        pred = KNeighborsClassifier(n_neighbors=8, weights="distance").fit(x[tr], t[tr])
        want.append(f1_score(t[te], pred.predict(x[te]), average="macro"))
    got = mp.two_fold_f1(feats, y, rows)
    assert math.isclose(got, float(np.mean(want)), abs_tol=1e-9)
    cut = 60  # split="examples": at the first row of example 10
    want = []
    for tr, te in ((slice(0, cut), slice(cut, None)), (slice(cut, None), slice(0, cut))):
        pred = KNeighborsClassifier(n_neighbors=8, weights="distance").fit(x[tr], t[tr])
        want.append(f1_score(t[te], pred.predict(x[te]), average="macro"))
    got = mp.two_fold_f1(feats, y, rows, split="examples")
    assert math.isclose(got, float(np.mean(want)), abs_tol=1e-9)


# ------------------------------------------------------------------ labels


def _reference_labels(data: list[int], k: int):
    """The reference's label generator (src/stask/probe.py), re-stated: ranks are the index
    of each value's first occurrence in the sorted list; for each rank 0..k the first list
    position holding the nearest present rank at or below it is useful; the same walk for
    rank k marks the root."""
    ranks = [sorted(data).index(v) for v in data]

    def position(r):
        while r not in ranks:
            r -= 1
        return ranks.index(r)

    p1 = np.zeros(len(data), int)
    root = np.zeros(len(data), int)
    for i in range(k + 1):
        p1[position(i)] = 1
    root[position(k)] = 1
    return p1, root


def test_kth_smallest_tree_hand_worked():
    depth = mp.kth_smallest_tree(np.array([[5, 3, 3, 7], [4, 1, 9, 2]]), k=1)
    # row 0: the 1st smallest (0-based) is 3 again: root at its first occurrence, no child
    # (the repeat is noise); row 1: answer 2 at position 3, its child 1 at position 1
    np.testing.assert_array_equal(depth, [[-1, 0, -1, -1], [-1, 1, -1, 0]])
    depth = mp.kth_smallest_tree(np.array([[6, 2, 6, 2, 1]]), k=3)  # sorted 1 2 2 6 6
    np.testing.assert_array_equal(depth, [[0, 1, -1, -1, 1]])
    rows, y = mp.p2_targets(depth)
    np.testing.assert_array_equal(y[rows], [[1, 1], [1, 0], [1, 0]])
    rows, y = mp.p1_targets(depth)
    assert rows.all() and y.tolist() == [[1, 1, 0, 0, 1]]


@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_kth_smallest_tree_equals_the_reference_with_many_duplicates(k):
    values = np.random.RandomState(k).randint(0, 6, (200, 8))  # ties in most rows
    depth = mp.kth_smallest_tree(values, k)
    for row, d in zip(values, depth):
        p1, root = _reference_labels(row.tolist(), k)
        np.testing.assert_array_equal(d >= 0, p1.astype(bool), err_msg=str(row))
        np.testing.assert_array_equal(d == 0, root.astype(bool), err_msg=str(row))


def test_size_order_is_first_occurrence_of_sorted_values():
    order = mp.size_order(np.array([[5, 3, 3, 7]]))
    np.testing.assert_array_equal(order, [[1, 1, 0, 3]])


# ------------------------------------------------------------------ features and heads


def test_features_shape_normalisation_and_one_pass(tiny_gpt2):
    tokens = np.random.RandomState(0).randint(0, 40, (5, 9)).astype(np.int32)
    traces = hv.TRACE_COUNT["harvest"]
    attn = mp.query_attention(tiny_gpt2, tokens, batch_size=2)  # 3 batches, every layer
    assert hv.TRACE_COUNT["harvest"] - traces <= 1  # one compiled program for all of them
    assert attn.shape == (5, 3, 4, 9)
    pattern = mj.run(tiny_gpt2, tokens, capture=["blocks.1.attn.hook_pattern"]).cache
    np.testing.assert_allclose(
        attn[:, 1], np.asarray(pattern["blocks.1.attn.hook_pattern"])[:, :, -1], atol=1e-5
    )
    feats = mp.attention_features(tiny_gpt2, tokens)
    assert feats.shape == (5, 9, 3)
    np.testing.assert_allclose(feats.max(axis=(1, 2)), 1.0, rtol=1e-6)
    raw = attn.mean(2).transpose(0, 2, 1)
    np.testing.assert_allclose(feats, raw / raw.max(axis=(1, 2), keepdims=True), rtol=1e-5)
    # a query position per row: row 0 at position 4 attends nowhere past it (causal)
    qp = np.array([4, -1, 8, 2, 0])
    f = mp.attention_features(tiny_gpt2, tokens, qp, normalize=False)
    assert np.all(f[0, 5:] == 0) and np.allclose(f[0, :5].sum(0), 1.0, atol=1e-5)


def test_pool_spans_means_over_each_span():
    f = np.arange(2 * 5 * 1, dtype=np.float32).reshape(2, 5, 1)
    spans = np.array([[[0, 2], [2, 5]], [[1, 2], [3, 3]]])
    out = mp.pool_spans(f, spans)
    np.testing.assert_allclose(out[..., 0], [[0.5, 3.0], [6.0, 0.0]])


def test_head_entropy_and_masks(tiny_gpt2):
    attn = np.zeros((2, 1, 2, 4), np.float32)
    attn[:, 0, 0, 0] = 1.0  # head 0: all on position 0 -> entropy 0
    attn[:, 0, 1] = 0.25  # head 1: uniform -> entropy 1
    np.testing.assert_allclose(mp.head_entropy(attn), [[0.0, 1.0]], atol=1e-6)
    order = np.array([[0, 0, 1, 2], [0, 0, 1, 2]])  # a repeated position: renormalised
    np.testing.assert_allclose(mp.head_entropy(attn, order)[0, 0], math.log(2) / math.log(4))
    ent = np.array([[0.5, 0.1, 0.9], [0.2, 0.8, 0.3]])
    mask = mp.head_mask(ent, 30)  # int(0.3 * 6) + 1 = 2 heads, the lowest entropy
    np.testing.assert_array_equal(mask, [[1, 0, 1], [0, 1, 1]])
    assert (mp.head_mask(ent, 30, order="random", seed=1) == 0).sum() == 2
    tokens = np.random.RandomState(1).randint(0, 40, (2, 6)).astype(np.int32)
    full = np.ones((3, 4), np.float32)
    full[1, 2] = 0.0
    out = mj.run(
        tiny_gpt2, tokens, mp.head_mask_hooks(tiny_gpt2, full), capture=["blocks.1.attn.hook_z"]
    )
    z = np.asarray(out.cache["blocks.1.attn.hook_z"])
    assert np.all(z[:, :, 2] == 0) and np.any(z[:, :, 1] != 0)
    hooks = {
        "blocks.1.attn.hook_pattern": mj.scale(
            jnp.asarray([1.0, 1.0, 0.0, 1.0])[:, None, None] * jnp.ones((4, 6, 6))
        )
    }
    ref = mj.run(tiny_gpt2, tokens, hooks).logits  # HF's head_mask: the pattern zeroed
    np.testing.assert_allclose(out.logits, ref, atol=1e-5)


def test_probe_end_to_end_on_separable_features_and_score():
    rng = np.random.RandomState(0)
    values = rng.randint(0, 50, (64, 8))
    depth = mp.kth_smallest_tree(values, 1)
    feats = rng.rand(64, 8, 3).astype(np.float32) * 0.05
    feats[..., 2] += (depth >= 0).astype(np.float32) + (depth == 0)  # layer 2: the tree
    traces = mp.TRACE_COUNT["knn"]
    res = mp.probe_f1(feats, depth)
    # 2 probes x 2 folds x (3 prefixes + all layers) kNN calls; prefixes zero the later
    # columns, so only the 4 (probe, fold) shapes compile
    assert mp.TRACE_COUNT["knn"] - traces <= 4
    assert res.f1_p1 == 1.0 and res.f1_p2 == 1.0
    assert res.f1_p1_layers.shape == (3,) and res.f1_p1_layers[-1] == 1.0
    assert res.f1_p1_layers[0] < 0.9
    assert mp.normalized_score(0.9, 0.6) == pytest.approx(0.75)
    assert np.isnan(mp.normalized_score(0.9, 1.0))


def test_generic_entry_point_on_a_model_with_positions_and_spans(tiny_gpt2):
    tokens = np.random.RandomState(2).randint(0, 40, (48, 8)).astype(np.int32)
    depth = mp.kth_smallest_tree(tokens, 2)
    res = mp.mechanistic_probe(tiny_gpt2, tokens, depth)
    feats = mp.attention_features(tiny_gpt2, tokens)
    want = mp.probe_f1(feats, depth)
    assert res.f1_p1 == want.f1_p1 and res.f1_p2 == want.f1_p2 and res.f1_p1_layers.shape == (3,)
    # spans: items are pairs of positions, the tree labels given per item
    spans = np.broadcast_to(np.array([[0, 2], [2, 4], [4, 6], [6, 8]]), (48, 4, 2))
    items = np.where(np.arange(4) == 0, 0, np.where(np.arange(4) == 1, 1, -1))
    items = np.broadcast_to(np.roll(items, 1), (48, 4)).copy()
    items[::2] = np.roll(items[::2], 2, axis=1)
    res = mp.mechanistic_probe(tiny_gpt2, tokens, items, spans=spans, p2="depth")
    f = mp.normalize_max(
        mp.pool_spans(mp.attention_features(tiny_gpt2, tokens, normalize=False), spans)
    )
    assert res.f1_p1 == mp.probe_f1(f, items, p2="depth").f1_p1
    with pytest.raises(InputError, match="must agree"):
        mp.mechanistic_probe(tiny_gpt2, tokens, depth[:40])
    with pytest.raises(InputError, match="one int position per sequence"):
        mp.mechanistic_probe(tiny_gpt2, tokens, depth, query_positions=np.zeros(3, int))


# ------------------------------------------------------------------ errors


def test_bad_inputs_raise_clear_errors(tiny_gpt2):
    x = np.zeros((10, 2), np.float32)
    with pytest.raises(InputError, match="n_train = 10"):
        mp.knn_predict(x, np.zeros(9), x)
    with pytest.raises(InputError, match=r"n_neighbors must be in \[1, 10\]"):
        mp.knn_predict(x, np.zeros(10), x, n_neighbors=11)
    with pytest.raises(InputError, match="same d"):
        mp.knn_predict(x, np.zeros(10), np.zeros((3, 4)))
    with pytest.raises(InputError, match=r"k must be in \[0, 4\)"):
        mp.kth_smallest_tree(np.zeros((2, 4), int), 4)
    with pytest.raises(InputError, match="shape"):
        mp.f1_macro(np.zeros(3), np.zeros(4))
    with pytest.raises(InputError, match="single class"):
        mp.two_fold_f1(np.zeros((20, 4, 1)), np.ones((20, 4), int), np.ones((20, 4), bool))
    with pytest.raises(InputError, match="single class"):  # k = 0: P2 has nothing to learn
        mp.probe_f1(np.random.rand(20, 4, 2), mp.kth_smallest_tree(np.arange(80).reshape(20, 4), 0))
    with pytest.raises(InputError, match="must agree"):
        mp.probe_f1(np.zeros((20, 4, 2)), np.zeros((19, 4), int))
    with pytest.raises(InputError, match="split must be"):
        mp.two_fold_f1(
            np.zeros((20, 4, 1)), np.ones((20, 4), int), np.ones((20, 4), bool), split="x"
        )
    with pytest.raises(InputError, match="mask must be"):
        mp.head_mask_hooks(tiny_gpt2, np.ones((2, 4)))
