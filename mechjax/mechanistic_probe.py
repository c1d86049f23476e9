"""MechanisticProbe (Hou et al., EMNLP 2023, "Towards a Mechanistic Interpretation of
Multi-Step Reasoning Capabilities of Language Models"): the reasoning tree read from
attention.

The hypothesis is that a model solving a multi-step task attends, at the position where it
answers, to the inputs of the reasoning tree (the statements the answer depends on) and
that how it attends tells their place in the tree. The probe has two stages, each a
k-nearest-neighbour classifier on one small attention feature per input item:

- **feature** of item i: for each layer, the attention from the query position (the
  last token, or one position per row) to i, averaged over heads; stacked over layers,
  [n_items, n_layers] per example, then divided by its maximum (per example). Items are
  token positions, or token spans (statements) whose attention is averaged over the span
  (`pool_spans`). `query_attention` reads every layer's pattern at the query position in
  one compiled pass (`mechjax.harvest.harvest`).
- **P1** ("noise"): every item, useful (in the tree) or noise.
- **P2** ("depth"): the useful items only, their place in the tree. For the k-th smallest
  task (`form="kth"`) the reference uses a 2-column multi-label target, column 0 "in the
  set of the k+1 smallest" and column 1 "is the root"; on useful items column 0 is always
  1, so its F1 is 1 and the macro F1 is (1 + F1 of "is root") / 2, as in the reference.
  `form="depth"` is the multi-class target of the reference's ProofWriter probe (the
  distance to the root).
- **classifier**: scikit-learn's `KNeighborsClassifier(n_neighbors=8,
  weights="distance")`, here a brute-force `jax.numpy` kNN (`knn_predict`, Euclidean,
  votes weighted by 1/distance; a query at distance 0 from some training rows takes only
  those rows, weight 1 each; ties go to the smallest class, as scikit-learn's
  `weighted_mode`), trained on one half and tested on the other, both ways, F1-macro
  averaged (`f1_macro`, scikit-learn's `f1_score(average="macro")`, multi-label per
  column for P2).
- **split** (`split="reference"`): `src/stask/probe.py` concatenates the selected items of
  every example and cuts the rows at `n_examples // 2` (the number of examples, halved,
  used as a row index), so one fold trains on the first n/2 rows and the other tests on
  them. `split="examples"` cuts at the first row of example n/2 instead.
- **score**: S = (F1_model - F1_random) / (1 - F1_random), F1_random the same probe on a
  randomly initialised model of the same config (`normalized_score`); the layer-wise
  variant uses the first l layers' columns only.

Labels of the k-th smallest task (`kth_smallest_tree`, the reference's
`label_generator`): the answer is the k-th smallest value (0-based) of the list, the root
of the tree; its children are the smaller values. With duplicates only the **first
occurrence** (in list order) of each distinct value at most the answer is useful: the
first occurrence of the answer is the root (depth 0), the first occurrences of the smaller
distinct values are its children (depth 1), every other item (larger values and every
repeat) is noise. So a list with duplicates has a tree of fewer than k + 1 items.

Labels are one int per item: `depth >= 0` the distance to the root, `NOISE` (-1) for an
item outside the tree, `IGNORE` (-2) for an item to leave out of both probes (padding).

The causal check (`src/stask/prune.py`): per head, the query position's attention
averaged over the examples, its entropy normalised by log(n_items) (`head_entropy`),
positions in order ("pos") or reordered by the size of the value they hold ("size",
`size_order`); heads are masked (`head_mask`: lowest entropy first, or at random) and the
task accuracy measured. Masking is `mj.scale` on each layer's `attn.hook_z` with a 0/1
factor per head: it equals HF's `head_mask`, which zeroes the head's attention weights and
so its z; the mask is an array leaf, so every mask runs in one compiled program.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Float, Int

from mechjax.errors import InputError
from mechjax.harvest import harvest
from mechjax.interventions import Scale, scale
from mechjax.model import Model

__all__ = [
    "IGNORE",
    "NOISE",
    "ProbeScores",
    "attention_features",
    "f1_macro",
    "head_entropy",
    "head_mask",
    "head_mask_hooks",
    "kth_smallest_tree",
    "knn_predict",
    "mechanistic_probe",
    "normalize_max",
    "normalized_score",
    "p1_targets",
    "p2_targets",
    "pool_spans",
    "probe_f1",
    "query_attention",
    "size_order",
    "two_fold_f1",
]

NOISE = -1
IGNORE = -2
SPLITS = ("reference", "examples")
P2_FORMS = ("kth", "depth")

# Times the kNN program was traced: tests read it to prove layer prefixes share one program.
TRACE_COUNT = {"knn": 0}


# ---------------------------------------------------------------------- features


def query_attention(
    model: Model,
    tokens: ArrayLike,
    query_positions: ArrayLike | None = None,
    *,
    attention_mask: ArrayLike | None = None,
    batch_size: int = 16,
    progress: bool | None = None,
) -> Float[np.ndarray, "n layer head key"]:
    """Every layer's attention pattern at the query position of each row, per head.

    One compiled pass over `tokens` in batches (`harvest` of every
    `blocks.{l}.attn.hook_pattern`, the query row selected on the device). `query_positions`
    is one int per row (negative from the end); None means the last position.
    """
    n_layers = model.config.n_layers
    sites = [f"blocks.{l}.attn.hook_pattern" for l in range(n_layers)]
    n = int(np.shape(tokens)[0]) if np.ndim(tokens) == 2 else 0
    qp = np.full(n, -1, np.int64) if query_positions is None else np.asarray(query_positions)
    out = harvest(
        model,
        tokens,
        sites,
        batch_size=batch_size,
        positions=qp,
        attention_mask=attention_mask,
        progress=progress,
    )
    return np.stack([out[s] for s in sites], axis=1).astype(np.float32)


def normalize_max(features: Float[ArrayLike, "n item layer"]) -> Float[np.ndarray, "n item layer"]:
    """Each example divided by its largest entry (over items and layers), as the paper;
    an all-zero example stays zero."""
    f = np.asarray(features, np.float32)
    if f.ndim != 3:
        raise InputError(f"features must be [n, items, layers], got shape {f.shape}")
    top = f.max(axis=(1, 2), keepdims=True)
    return f / np.where(top > 0, top, 1.0)


def attention_features(
    model: Model,
    tokens: ArrayLike,
    query_positions: ArrayLike | None = None,
    *,
    normalize: bool = True,
    attention_mask: ArrayLike | None = None,
    batch_size: int = 16,
    progress: bool | None = None,
) -> Float[np.ndarray, "n key layer"]:
    """The probe's features: attention from the query position to every position, averaged
    over heads, stacked over layers ([n, pos, n_layers]); divided by each example's max
    when `normalize`."""
    attn = query_attention(
        model,
        tokens,
        query_positions,
        attention_mask=attention_mask,
        batch_size=batch_size,
        progress=progress,
    )
    feats = attn.mean(axis=2).transpose(0, 2, 1)  # [n, key, layer]
    return normalize_max(feats) if normalize else feats


def pool_spans(
    features: Float[ArrayLike, "n key layer"], spans: Int[ArrayLike, "n2 item 2"]
) -> Float[np.ndarray, "n item layer"]:
    """Per item, the mean of `features` over its token span [start, stop).

    `spans` is int [n, n_items, 2]; a span with stop <= start is padding and gives zeros
    (label it `IGNORE`).
    """
    f = np.asarray(features, np.float32)
    s = np.asarray(spans)
    if f.ndim != 3 or s.ndim != 3 or s.shape[2] != 2:
        raise InputError(
            f"pool_spans needs features [n, pos, layers] and spans [n, items, 2], got "
            f"{f.shape} and {s.shape}"
        )
    if s.shape[0] != f.shape[0]:
        raise InputError(f"features have {f.shape[0]} rows but spans have {s.shape[0]}")
    if s.size and (s.min() < 0 or s.max() > f.shape[1]):
        raise InputError(f"spans must lie in [0, {f.shape[1]}], got values {s.min()}..{s.max()}")
    csum = np.concatenate([np.zeros_like(f[:, :1]), np.cumsum(f, axis=1)], axis=1)
    rows = np.arange(f.shape[0])[:, None]
    total = csum[rows, s[..., 1]] - csum[rows, s[..., 0]]
    width = (s[..., 1] - s[..., 0]).astype(np.float32)[..., None]
    return np.where(width > 0, total / np.maximum(width, 1.0), 0.0).astype(np.float32)


# ---------------------------------------------------------------------- labels


def kth_smallest_tree(values: Int[ArrayLike, "n item"], k: int) -> Int[np.ndarray, "n item"]:
    """Tree labels of the k-th smallest task (0-based k): 0 for the root (the first
    occurrence of the answer), 1 for the first occurrence of each smaller distinct value,
    `NOISE` for the rest (larger values and every repeat). See the module docstring."""
    v = np.asarray(values)
    if v.ndim != 2 or not np.issubdtype(v.dtype, np.integer):
        raise InputError(f"values must be an int [n, items] array, got {v.shape} {v.dtype}")
    m = v.shape[1]
    if not 0 <= k < m:
        raise InputError(f"k must be in [0, {m}) for lists of {m} items, got {k}")
    answer = np.sort(v, axis=1)[:, k : k + 1]
    first = np.ones(v.shape, bool)  # v[:, j] occurs nowhere before j
    for j in range(1, m):
        first[:, j] = ~(v[:, :j] == v[:, j : j + 1]).any(axis=1)
    depth = np.full(v.shape, NOISE, np.int64)
    depth[first & (v < answer)] = 1
    depth[first & (v == answer)] = 0
    return depth


def size_order(values: Int[ArrayLike, "n item"]) -> Int[np.ndarray, "n item"]:
    """Per example, the position of the first occurrence of each value in ascending order
    (a repeated value gives its first position again): the reference's "size" ordering."""
    v = np.asarray(values)
    if v.ndim != 2:
        raise InputError(f"values must be [n, items], got shape {v.shape}")
    srt = np.sort(v, axis=1)
    return np.argmax(v[:, None, :] == srt[:, :, None], axis=2)


def _check_depth(depth: Any) -> np.ndarray:
    d = np.asarray(depth)
    if d.ndim != 2 or not np.issubdtype(d.dtype, np.integer):
        raise InputError(f"tree labels must be an int [n, items] array, got {d.shape} {d.dtype}")
    if d.size and d.min() < IGNORE:
        raise InputError(
            f"tree labels are depth >= 0, NOISE ({NOISE}) or IGNORE ({IGNORE}); got {d.min()}"
        )
    return d


def p1_targets(depth: Int[ArrayLike, "n item"]) -> tuple[np.ndarray, np.ndarray]:
    """(rows bool [n, items]: every item but `IGNORE`; targets int [n, items]: 1 useful)."""
    d = _check_depth(depth)
    return d != IGNORE, (d >= 0).astype(np.int64)


def p2_targets(depth: Int[ArrayLike, "n item"], form: str = "kth") -> tuple[np.ndarray, np.ndarray]:
    """(rows bool [n, items]: the useful items; targets): `form="kth"` int [n, items, 2],
    columns (in the tree, is the root); `form="depth"` int [n, items], the depth."""
    d = _check_depth(depth)
    if form not in P2_FORMS:
        raise InputError(f"P2 form must be one of {P2_FORMS}, got {form!r}")
    rows = d >= 0
    if form == "depth":
        return rows, np.maximum(d, 0)
    return rows, np.stack([rows, d == 0], axis=-1).astype(np.int64)


# ---------------------------------------------------------------------- kNN and F1


def _knn_step(
    x_train: jax.Array, y_enc: jax.Array, x_test: jax.Array, k: int, n_classes: int, chunk: int
):
    """Predicted class indices [n_test, n_outputs] (x_test padded to a multiple of chunk)."""
    TRACE_COUNT["knn"] += 1

    def one(q):
        d2 = jnp.sum((q[:, None, :] - x_train[None, :, :]) ** 2, axis=-1)
        neg, idx = jax.lax.top_k(-d2, k)  # ties: the lower training index first
        dist = jnp.sqrt(jnp.maximum(-neg, 0.0))
        zero = dist == 0
        inv = 1.0 / jnp.where(zero, 1.0, dist)
        w = jnp.where(zero.any(axis=1, keepdims=True), zero.astype(dist.dtype), inv)
        onehot = jax.nn.one_hot(y_enc[idx], n_classes, dtype=dist.dtype)  # [c, k, o, C]
        votes = jnp.einsum("ck,ckoC->coC", w, onehot)
        return jnp.argmax(votes, axis=-1)  # first maximum: the smallest class

    q = x_test.reshape(-1, chunk, x_test.shape[-1])
    return jax.lax.map(one, q).reshape(-1, y_enc.shape[1])


_knn_jit = jax.jit(_knn_step, static_argnames=("k", "n_classes", "chunk"))


def knn_predict(
    x_train: Float[ArrayLike, "n_train d"],
    y_train: ArrayLike,
    x_test: Float[ArrayLike, "n_test d2"],
    *,
    n_neighbors: int = 8,
) -> np.ndarray:
    """scikit-learn's `KNeighborsClassifier(n_neighbors, weights="distance")` predictions.

    Euclidean distances; each of the `n_neighbors` nearest training rows votes with weight
    1/distance; if some are at distance 0 only those vote (weight 1 each). Ties go to the
    smallest class. `y_train` is [n_train] or [n_train, n_outputs] (each column its own
    classifier, scikit-learn's multi-output); the result has its shape and dtype.
    """
    xt, xq = np.asarray(x_train, np.float32), np.asarray(x_test, np.float32)
    y = np.asarray(y_train)
    if xt.ndim != 2 or xq.ndim != 2 or xt.shape[1] != xq.shape[1]:
        raise InputError(
            f"x_train and x_test must be [n, d] with the same d, got {xt.shape} and {xq.shape}"
        )
    if y.ndim not in (1, 2) or y.shape[0] != xt.shape[0]:
        raise InputError(
            f"y_train must be [n_train] or [n_train, outputs] with n_train = {xt.shape[0]} "
            f"(the rows of x_train), got shape {y.shape}"
        )
    if not 1 <= n_neighbors <= xt.shape[0]:
        raise InputError(
            f"n_neighbors must be in [1, {xt.shape[0]}] (the training rows), got {n_neighbors}"
        )
    y2 = y.reshape(y.shape[0], -1)
    classes, enc = zip(*(np.unique(y2[:, j], return_inverse=True) for j in range(y2.shape[1])))
    y_enc = np.stack(enc, axis=1).astype(np.int32)
    n_classes = max(len(c) for c in classes)
    chunk = int(max(1, min(xq.shape[0], (1 << 22) // max(xt.shape[0], 1))))
    pad = -xq.shape[0] % chunk
    xq_p = np.concatenate([xq, np.zeros((pad, xq.shape[1]), np.float32)]) if pad else xq
    pred = np.asarray(_knn_jit(xt, y_enc, xq_p, n_neighbors, n_classes, chunk))[: xq.shape[0]]
    out = np.stack([classes[j][pred[:, j]] for j in range(y2.shape[1])], axis=1)
    return out.reshape((xq.shape[0],) + y.shape[1:]).astype(y.dtype)


def f1_macro(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """scikit-learn's `f1_score(y_true, y_pred, average="macro")`.

    1-D labels: the mean over every label in either array of 2tp / (2tp + fp + fn).
    2-D 0/1 indicators (multi-label): the mean over columns, a column with no true and no
    predicted positive counting 0 (scikit-learn's default `zero_division`).
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim not in (1, 2) or t.shape[0] == 0:
        raise InputError(
            f"y_true and y_pred must have one non-empty shape [n] or [n, labels], got "
            f"{t.shape} and {p.shape}"
        )
    if t.ndim == 2:
        if not (np.isin(t, (0, 1)).all() and np.isin(p, (0, 1)).all()):
            raise InputError("2-D targets must be 0/1 indicators (multi-label)")
        tp = ((t == 1) & (p == 1)).sum(0)
        wrong = (t != p).sum(0)  # fp + fn
    else:
        labels = np.union1d(t, p)
        tp = np.array([((t == c) & (p == c)).sum() for c in labels])
        wrong = np.array([((t == c) != (p == c)).sum() for c in labels])
    denom = 2 * tp + wrong
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


def _single_class(y: np.ndarray) -> bool:
    y2 = y.reshape(y.shape[0], -1)
    return all(len(np.unique(y2[:, j])) < 2 for j in range(y2.shape[1]))


def two_fold_f1(
    features: Float[ArrayLike, "n item d"],
    targets: ArrayLike,
    rows: ArrayLike,
    *,
    split: str = "reference",
    n_neighbors: int = 8,
) -> float:
    """Mean macro F1 of the kNN trained on one half and tested on the other, both ways.

    `features` [n, items, d]; `targets` [n, items] or [n, items, outputs]; `rows` bool
    [n, items], the items in the probe. The selected rows are taken example by example;
    `split` is where they are cut (module docstring): "reference" at row n // 2,
    "examples" at the first row of example n // 2.
    """
    f, y, r = np.asarray(features, np.float32), np.asarray(targets), np.asarray(rows, bool)
    if f.ndim != 3 or r.shape != f.shape[:2] or y.shape[:2] != f.shape[:2]:
        raise InputError(
            f"features [n, items, d], targets [n, items(, outputs)] and rows [n, items] must "
            f"agree on n and items, got {f.shape}, {y.shape}, {r.shape}"
        )
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    x, t = f[r], y[r]
    if t.shape[0] == 0 or _single_class(t):
        raise InputError(
            f"the probe's targets hold a single class over its {t.shape[0]} rows: any "
            "classifier scores F1 = 1, so the probe would measure nothing"
        )
    n = f.shape[0]
    cut = n // 2 if split == "reference" else int(r[: n // 2].sum())
    if not n_neighbors <= cut <= t.shape[0] - n_neighbors:
        raise InputError(
            f"a fold has fewer than n_neighbors = {n_neighbors} training rows (cut at row "
            f"{cut} of {t.shape[0]}); give more examples"
        )
    scores = []
    for train, test in ((slice(0, cut), slice(cut, None)), (slice(cut, None), slice(0, cut))):
        pred = knn_predict(x[train], t[train], x[test], n_neighbors=n_neighbors)
        scores.append(f1_macro(t[test], pred))
    return float(np.mean(scores))


class ProbeScores(NamedTuple):
    """F1 of both probe stages with every layer's columns, and with the first l + 1 layers'
    columns ([n_layers], the layer-wise variant; empty when not computed)."""

    f1_p1: float
    f1_p2: float
    f1_p1_layers: np.ndarray
    f1_p2_layers: np.ndarray


def probe_f1(
    features: Float[ArrayLike, "n item layer"],
    depth: Int[ArrayLike, "n2 item2"],
    *,
    p2: str = "kth",
    split: str = "reference",
    layerwise: bool = True,
    n_neighbors: int = 8,
) -> ProbeScores:
    """Both stages of the probe on given features and tree labels (module docstring).

    Layer prefixes zero the later columns rather than slicing them: distances are the same
    and every prefix reuses one compiled kNN.
    """
    f, d = np.asarray(features, np.float32), _check_depth(depth)
    if f.ndim != 3 or f.shape[:2] != d.shape:
        raise InputError(
            f"features [n, items, layers] and tree labels [n, items] must agree, got "
            f"{f.shape} and {d.shape}"
        )
    targets = [p1_targets(d), p2_targets(d, p2)]

    def scores(x: np.ndarray) -> list[float]:
        return [two_fold_f1(x, y, r, split=split, n_neighbors=n_neighbors) for r, y in targets]

    full = scores(f)
    layers: list[list[float]] = []
    if layerwise:
        for l in range(f.shape[2]):
            masked = f.copy()
            masked[:, :, l + 1 :] = 0.0
            layers.append(scores(masked))
    per = np.asarray(layers, np.float64).reshape(-1, 2)
    return ProbeScores(full[0], full[1], per[:, 0], per[:, 1])


def normalized_score(f1_model: Any, f1_random: Any) -> Any:
    """S = (F1_model - F1_random) / (1 - F1_random): 0 at the random model's F1, 1 at a
    perfect probe; NaN where F1_random is 1 (S undefined). Scalars, arrays or lists."""
    m, r = np.asarray(f1_model, np.float64), np.asarray(f1_random, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(r < 1.0, (m - r) / (1.0 - r), np.nan)
    return float(s) if s.ndim == 0 else s


def mechanistic_probe(
    model: Model,
    tokens: ArrayLike,
    depth: Int[ArrayLike, "n item"],
    *,
    query_positions: ArrayLike | None = None,
    spans: ArrayLike | None = None,
    attention_mask: ArrayLike | None = None,
    p2: str = "kth",
    split: str = "reference",
    layerwise: bool = True,
    n_neighbors: int = 8,
    batch_size: int = 16,
    progress: bool | None = None,
) -> ProbeScores:
    """The probe on any model and task: tokens [n, pos], one query position per row (None:
    the last), and tree labels per item (`depth`, [n, items]). Items are the token
    positions (items = pos) or, with `spans` [n, items, 2], token spans whose attention is
    averaged before the per-example max normalisation."""
    feats = attention_features(
        model,
        tokens,
        query_positions,
        normalize=spans is None,
        attention_mask=attention_mask,
        batch_size=batch_size,
        progress=progress,
    )
    if spans is not None:
        feats = normalize_max(pool_spans(feats, spans))
    return probe_f1(feats, depth, p2=p2, split=split, layerwise=layerwise, n_neighbors=n_neighbors)


# ---------------------------------------------------------------------- causal check


def head_entropy(
    attention: Float[ArrayLike, "n layer head key"], order: ArrayLike | None = None
) -> Float[np.ndarray, "layer head"]:
    """Per head, the entropy of the query attention averaged over the examples, divided by
    log(n_items) (scipy's `entropy` of the renormalised mean, as the reference).

    `attention` is `query_attention`'s [n, layers, heads, pos]; `order` (int [n, items])
    reorders (and may repeat) positions per example first, e.g. `size_order(values)`.
    """
    a = np.asarray(attention, np.float64)
    if a.ndim != 4:
        raise InputError(f"attention must be [n, layers, heads, pos], got shape {a.shape}")
    if order is not None:
        o = np.asarray(order)
        if o.ndim != 2 or o.shape[0] != a.shape[0] or o.min() < 0 or o.max() >= a.shape[3]:
            raise InputError(
                f"order must be int [{a.shape[0]}, items] with positions in [0, {a.shape[3]}), "
                f"got shape {o.shape}"
            )
        a = np.take_along_axis(a, o[:, None, None, :], axis=3)
    mean = a.mean(axis=0)
    p = mean / np.maximum(mean.sum(axis=-1, keepdims=True), 1e-300)
    ent = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
    return (ent / np.log(p.shape[-1])).astype(np.float32)


def head_mask(
    entropy: Float[ArrayLike, "layer head"],
    percent: int | float,
    *,
    order: str = "entropy",
    seed: int = 0,
) -> Float[np.ndarray, "layer head"]:
    """A 0/1 mask [layers, heads] (0 = masked) of `int(percent / 100 * n_heads_total) + 1`
    heads, as the reference's loop (which masks one head past the count): lowest entropy
    first, ties at random (`order="entropy"`), or uniformly at random (`"random"`)."""
    e = np.asarray(entropy, np.float64)
    if e.ndim != 2:
        raise InputError(f"entropy must be [layers, heads], got shape {e.shape}")
    if not 0 <= percent <= 100:
        raise InputError(f"percent must be in [0, 100], got {percent}")
    if order not in ("entropy", "random"):
        raise InputError(f"order must be 'entropy' or 'random', got {order!r}")
    total = e.size
    count = min(int(percent / 100 * total) + 1, total)
    rng = np.random.RandomState(seed)
    if order == "entropy":
        picked = np.lexsort((rng.random_sample(total), e.ravel()))[:count]
    else:
        picked = rng.choice(total, count, replace=False)
    mask = np.ones(total, np.float32)
    mask[picked] = 0.0
    return mask.reshape(e.shape)


def head_mask_hooks(model: Model, mask: Float[ArrayLike, "layer head"]) -> dict[str, Scale]:
    """Interventions masking heads: every layer's `attn.hook_z` scaled by its row of `mask`
    (1 keeps a head, 0 removes it), so every mask has one structure and one program."""
    cfg = model.config
    m = jnp.asarray(mask, jnp.float32)
    if m.shape != (cfg.n_layers, cfg.n_heads):
        raise InputError(
            f"mask must be [n_layers, n_heads] = {(cfg.n_layers, cfg.n_heads)}, got {m.shape}"
        )
    d_head = cfg.d_head
    return {
        f"blocks.{l}.attn.hook_z": scale(jnp.broadcast_to(m[l][:, None], (cfg.n_heads, d_head)))
        for l in range(cfg.n_layers)
    }
