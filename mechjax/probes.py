"""Layer-wise linear probes, every layer and every regularisation value in one compiled program.

A probe asks whether a property of the input (a class, a number) can be read linearly from
the activations at a layer. Activations come as `acts` `[n_layers, n, d]` (stack the sites
of `mechjax.harvest.harvest` with `stack_layers`), labels `y` `[n]`. Each function splits
the rows once (`split`), standardises each layer with the training rows' mean and std
(std floored at 1e-6; the validation rows get the same transform), fits a probe for every
layer and every value of the regularisation grid in one compiled program (ridge: `jax.vmap`
over the grid and layers; logistic: `lax.map` over both, each fit stopping when it has
converged; one `jax.jit`, no Python loop over either), keeps per layer the value
with the best validation score, and maps the weights back to the original activation
space: with standardised `z = (x - mu) / sd` and `z @ w + b`, the original-space probe is
`x @ (w / sd) + (b - mu @ (w / sd))`.

Ridge (`ridge`), scikit-learn's `Ridge(alpha)` on the standardised training rows: with the
training targets centred (`fit_intercept=True`; the standardised features already have
mean 0), `w` solves `(ZᵀZ + αI) w = Zᵀ(y - ȳ)` and the intercept is `ȳ`, not penalised.
When there are fewer training rows than features the dual form
`w = Zᵀ (ZZᵀ + αI)⁻¹ (y - ȳ)` (an n x n system) is solved instead; both are the same `w`.
`alpha` is chosen per layer by validation R².

Logistic (`logistic`), scikit-learn's `LogisticRegression(C=C)`: minimises
`sum_i logloss_i + 0.5 / C ||w||²` (intercept not penalised), with one weight vector and a
sigmoid for two classes, and a `[d, k]` weight matrix and softmax (multinomial) for more;
trained with `optax.lbfgs` (backtracking line search; it compiles faster than the zoom
search and converges as well on these convex objectives) for at most `steps` steps, one
fit after another over layers x C; a fit stops when every gradient entry is at most
`GTOL`, or when a step's result is not finite (a converged float32 line search; the step
is dropped). `C` is chosen per layer by validation accuracy.

Ties in the validation score go to the stronger penalty (the larger alpha, the smaller
C): the simpler probe wins when the data cannot tell them apart.

Metrics (`accuracy`, `balanced_accuracy`, `auroc`, `r2`) are standalone and equal to
scikit-learn's `accuracy_score`, `balanced_accuracy_score`, `roc_auc_score` (binary:
rank-based Mann-Whitney U with tied scores given average ranks; multiclass: macro
one-vs-rest) and `r2_score`.

A probe that decodes a property may be decoding the probe's own capacity to memorise.
Hewitt & Liang 2019, "Designing and Interpreting Probes with Control Tasks", compare with a
control task: each input type (a token id, a word) gets a random class fixed per type
(`control_labels`), learnable only by memorising types; `selectivity` is the real task's
validation accuracy minus the control task's, per layer, with the same probe, split and
grid. A selective probe reads the property from the representation, not from the types.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from mechjax.errors import InputError
from mechjax.probe_metrics import (
    _accuracy,
    _auroc,
    _balanced_accuracy,
    _r2,
    accuracy,
    auroc,
    balanced_accuracy,
    r2,
)

__all__ = [
    "DigitProbes",
    "ProbeResult",
    "Selectivity",
    "accuracy",
    "auroc",
    "balanced_accuracy",
    "control_labels",
    "digit_probes",
    "digits",
    "disagreement",
    "logistic",
    "r2",
    "ridge",
    "selectivity",
    "split",
    "stack_layers",
    "standardise",
]

# Times each compiled fit was traced: tests read it to prove one program serves new data.
TRACE_COUNT = {"ridge": 0, "logistic": 0}

STD_FLOOR = 1e-6
# A line-search step is accepted when the loss rises by at most RTOL (relative): at float32
# resolution a converged lane otherwise backtracks the full 20 steps at every L-BFGS step,
# and under `vmap` every lane of every layer waits for it.
RTOL = 1e-6
# A fit stops once every gradient entry of its (mean-scaled) objective is at most GTOL, or
# after `steps` L-BFGS steps (scikit-learn's lbfgs stops at a projected gradient of 1e-4).
GTOL = 1e-6


# ---------------------------------------------------------------------------- inputs


def stack_layers(harvested: dict[str, Any], sites: Sequence[str]) -> np.ndarray:
    """`{site: [n, d]}` (as `mechjax.harvest.harvest` returns) -> `[len(sites), n, d]`."""
    missing = [s for s in sites if s not in harvested]
    if missing:
        raise InputError(
            f"site {missing[0]!r} was not harvested; harvested sites: {sorted(harvested)}"
        )
    if len(sites) == 0:
        raise InputError("stack_layers needs at least one site")
    arrays = [np.asarray(harvested[s]) for s in sites]
    for s, a in zip(sites, arrays):
        if a.ndim != 2:
            raise InputError(
                f"site {s!r} has shape {a.shape}; probes need [n, d] per site (harvest one "
                "position per sequence, or reshape [n, pos, d] to [n * pos, d])"
            )
        if a.shape != arrays[0].shape:
            raise InputError(
                f"site {s!r} has shape {a.shape} but {sites[0]!r} has {arrays[0].shape}"
            )
    return np.stack(arrays)


def _check_acts(acts: ArrayLike) -> np.ndarray:
    x = np.asarray(acts)
    if x.ndim != 3:
        raise InputError(f"acts must be [n_layers, n_examples, d], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        l, i, j = (int(v[0]) for v in np.nonzero(bad))
        raise InputError(
            f"acts hold {int(bad.sum())} NaN/inf values (first at layer {l}, example {i}, "
            f"feature {j}); drop or fill them before probing"
        )
    return x


def _check_labels(x: np.ndarray, y: ArrayLike, name: str = "y") -> np.ndarray:
    yy = np.asarray(y)
    if yy.ndim != 1:
        raise InputError(f"{name} must be 1-D [n_examples], got shape {yy.shape}")
    if yy.shape[0] != x.shape[1]:
        raise InputError(
            f"{name} has {yy.shape[0]} labels but acts have {x.shape[1]} examples "
            f"(acts shape {x.shape})"
        )
    return yy


def _classes(y: np.ndarray, name: str = "y") -> tuple[np.ndarray, np.ndarray]:
    classes, codes = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise InputError(
            f"{name} has a single class ({classes[0].item()!r} for all {y.size} examples); a "
            "classifier needs at least 2"
        )
    return classes, codes.astype(np.int32)


def split(
    n: int, *, val_fraction: float = 0.25, seed: int = 0, stratify: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train / validation row indices (each sorted).

    With `stratify` (labels `[n]`), each class contributes `round(val_fraction * n_c)`
    rows to validation (at least 1 when it has 2 or more rows), so both splits keep the
    class proportions.
    """
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    if stratify is None:
        perm = rng.permutation(n)
        n_val = int(round(val_fraction * n))
        val = perm[:n_val]
    else:
        labels = np.asarray(stratify)
        if labels.shape != (n,):
            raise InputError(f"stratify has shape {labels.shape}; expected ({n},)")
        val_parts = []
        for c in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == c))
            k = int(round(val_fraction * rows.size))
            if rows.size >= 2:
                k = min(max(k, 1), rows.size - 1)
            else:
                k = 0
            val_parts.append(rows[:k])
        val = np.concatenate(val_parts)
    val = np.sort(val)
    train = np.setdiff1d(np.arange(n), val)
    if val.size < 2:
        raise InputError(
            f"the split leaves {val.size} validation rows (n={n}, val_fraction="
            f"{val_fraction}); at least 2 are needed to choose the regularisation"
        )
    if train.size < 2:
        raise InputError(f"the split leaves {train.size} training rows (n={n})")
    return train, val


def _indices(indices, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Check explicit `(train_rows, val_rows)`: int row numbers in [0, n), disjoint."""
    if indices is None:
        return None
    if len(indices) != 2:
        raise InputError("indices must be a pair (train_rows, val_rows)")
    tr, va = (np.asarray(i) for i in indices)
    for name, rows in (("train", tr), ("val", va)):
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise InputError(f"{name} rows must be 1-D integers, got {rows.dtype} {rows.shape}")
        if rows.size < 2:
            raise InputError(f"{name} rows: {rows.size} given, at least 2 needed")
        if rows.min() < 0 or rows.max() >= n:
            raise InputError(f"{name} rows must be in [0, {n}), got [{rows.min()}, {rows.max()}]")
    both = np.intersect1d(tr, va)
    if both.size:
        raise InputError(f"{both.size} rows are in both train and val (first: {both[0]})")
    return np.sort(tr), np.sort(va)


def standardise(x_train, x_val):
    """Per layer, per feature mean/std of the training rows (`[..., n, d]`, std floored at
    1e-6), applied to both. Returns `(z_train, z_val, mean, std)`, `mean`/`std` `[..., d]`."""
    mu = jnp.mean(x_train, axis=-2)
    sd = jnp.maximum(jnp.std(x_train, axis=-2), STD_FLOOR)
    z_tr = (x_train - mu[..., None, :]) / sd[..., None, :]
    z_va = (x_val - mu[..., None, :]) / sd[..., None, :]
    return z_tr, z_va, mu, sd


# ---------------------------------------------------------------------------- result


class ProbeResult(NamedTuple):
    """Probes of every layer.

    `weights` `[n_layers, d]` (ridge, binary logistic) or `[n_layers, d, k]` (softmax) and
    `intercepts` `[n_layers]` / `[n_layers, k]` act on ORIGINAL (unstandardised)
    activations: `acts[l] @ weights[l] + intercepts[l]`. `reg` is the chosen alpha (ridge)
    or C (logistic) per layer, `reg_grid` the grid tried and `val_grid` `[n_layers, n_reg]`
    the validation score (R² or accuracy) of each. `train` / `val` map a metric name to
    `[n_layers]`; `metric` names the one that chose `reg` and `best_layer`.
    """

    kind: str  # "ridge" | "logistic"
    weights: np.ndarray
    intercepts: np.ndarray
    reg: np.ndarray
    reg_grid: np.ndarray
    val_grid: np.ndarray
    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    metric: str
    best_layer: int
    classes: np.ndarray | None
    train_idx: np.ndarray
    val_idx: np.ndarray

    def direction(self, layer: int, cls: int | None = None) -> np.ndarray:
        """Unit vector `[d]` in activation space along which the probe's output grows: the
        weight vector (ridge, binary logistic), or for softmax the logit direction of class
        index `cls` relative to the mean of all classes. Usable with `mj.project` and
        `mechjax.steering.add_vector`."""
        w = np.asarray(self.weights[layer], np.float64)
        if w.ndim == 2:
            k = w.shape[1]
            if cls is None:
                raise InputError(
                    f"this softmax probe has {k} classes ({self.classes!r}); pass cls= "
                    f"(a class index in 0..{k - 1})"
                )
            if not 0 <= cls < k:
                raise InputError(f"cls={cls} out of range for {k} classes")
            w = w[:, cls] - w.mean(axis=1)
        norm = np.linalg.norm(w)
        if norm == 0:
            raise InputError(f"the probe of layer {layer} has zero weights: no direction")
        return (w / norm).astype(np.float32)

    def decision(self, acts_layer: ArrayLike, layer: int) -> np.ndarray:
        """Raw output on `[n, d]` activations: ridge predictions, binary logits `[n]` or
        softmax logits `[n, k]`."""
        x = np.asarray(acts_layer, np.float64)
        d = self.weights.shape[1]
        if x.ndim != 2 or x.shape[1] != d:
            raise InputError(f"acts_layer must be [n, {d}], got shape {x.shape}")
        return x @ np.asarray(self.weights[layer], np.float64) + self.intercepts[layer]

    def proba(self, acts_layer: ArrayLike, layer: int) -> np.ndarray:
        """Logistic probes: class probabilities `[n, k]`, columns in `classes` order (two
        columns for a binary probe)."""
        if self.kind != "logistic":
            raise InputError("proba is for logistic probes; a ridge probe has no classes")
        out = self.decision(acts_layer, layer)
        if out.ndim == 1:
            p1 = 1.0 / (1.0 + np.exp(-out))
            return np.stack([1.0 - p1, p1], axis=1)
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, acts_layer: ArrayLike, layer: int) -> np.ndarray:
        """Ridge: predicted values `[n]`. Logistic: predicted labels `[n]` (original label
        values)."""
        out = self.decision(acts_layer, layer)
        if self.kind == "ridge":
            return out
        assert self.classes is not None
        idx = (out > 0).astype(int) if out.ndim == 1 else out.argmax(axis=1)
        return self.classes[idx]


def _to_host(kind, w, b, reg_grid, grid, best, train, val, metric, classes, tr, va):
    w, b, grid = np.asarray(w), np.asarray(b), np.asarray(grid)
    best = np.asarray(best)
    val_h = {k: np.asarray(v) for k, v in val.items()}
    score = np.nan_to_num(val_h[metric], nan=-np.inf)
    return ProbeResult(
        kind=kind,
        weights=w,
        intercepts=b,
        reg=np.asarray(reg_grid)[best],
        reg_grid=np.asarray(reg_grid),
        val_grid=grid,
        train={k: np.asarray(v) for k, v in train.items()},
        val=val_h,
        metric=metric,
        best_layer=int(np.argmax(score)),
        classes=classes,
        train_idx=tr,
        val_idx=va,
    )


def _pick(best, tree):
    """Per layer, entry `best[l]` of the grid axis (axis 1) of every leaf."""
    return jax.tree.map(lambda a: jax.vmap(lambda x, i: x[i])(a, best), tree)


def _original_space(w, b, mu, sd):
    """Standardised-space probe (w [d] or [d, k]) -> original space."""
    scale = (1.0 / sd) if w.ndim == 1 else (1.0 / sd)[:, None]
    w0 = w * scale
    return w0, b - mu @ w0


# ---------------------------------------------------------------------------- ridge


def _ridge_fit(x_tr, y_tr, x_va, y_va, alphas, fit_intercept: bool):
    TRACE_COUNT["ridge"] += 1
    n, d = x_tr.shape[-2:]

    def layer(xt, xv):
        zt, zv, mu, sd = standardise(xt, xv)
        ybar = jnp.mean(y_tr) if fit_intercept else jnp.zeros((), y_tr.dtype)
        yc = y_tr - ybar
        if n < d:
            gram = zt @ zt.T
            solve = lambda a: zt.T @ jnp.linalg.solve(gram + a * jnp.eye(n, dtype=gram.dtype), yc)
        else:
            gram = zt.T @ zt
            rhs = zt.T @ yc
            solve = lambda a: jnp.linalg.solve(gram + a * jnp.eye(d, dtype=gram.dtype), rhs)
        w = jax.vmap(solve)(alphas)  # [n_alpha, d]
        p_tr = zt @ w.T + ybar  # [n, n_alpha]
        p_va = zv @ w.T + ybar
        r2_tr = jax.vmap(_r2, in_axes=(None, 1))(y_tr, p_tr)
        r2_va = jax.vmap(_r2, in_axes=(None, 1))(y_va, p_va)
        w0, b0 = jax.vmap(_original_space, in_axes=(0, None, None, None))(w, ybar, mu, sd)
        return w0, b0, r2_tr, r2_va

    w, b, r2_tr, r2_va = jax.vmap(layer)(x_tr, x_va)  # [L, n_alpha, ...]
    best = jnp.argmax(jnp.nan_to_num(r2_va, nan=-jnp.inf), axis=1)  # first max: grid order
    w, b, tr, va = _pick(best, (w, b, r2_tr, r2_va))
    return w, b, best, r2_va, {"r2": tr}, {"r2": va}


_ridge_jit = jax.jit(_ridge_fit, static_argnames=("fit_intercept",))


def ridge(
    acts: ArrayLike,
    y: ArrayLike,
    *,
    alphas: Sequence[float] = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0),
    val_fraction: float = 0.25,
    seed: int = 0,
    fit_intercept: bool = True,
    indices: tuple[ArrayLike, ArrayLike] | None = None,
) -> ProbeResult:
    """Ridge regression probes of `y` `[n]` (floats) on every layer of `acts`
    `[n_layers, n, d]`, alpha chosen per layer by validation R² (ties: the larger alpha).
    Equal to scikit-learn's `Ridge(alpha)` on the standardised training rows.
    `indices`: explicit `(train_rows, val_rows)` instead of the seeded split (rows in
    neither, a held-out test set, are not used)."""
    x = _check_acts(acts)
    yy = _check_labels(x, y).astype(x.dtype)
    if not np.all(np.isfinite(yy)):
        raise InputError(f"y holds {int((~np.isfinite(yy)).sum())} NaN/inf targets")
    if len(alphas) == 0 or min(alphas) < 0:
        raise InputError(f"alphas must be a non-empty sequence of values >= 0, got {alphas}")
    tr, va = _indices(indices, x.shape[1]) or split(
        x.shape[1], val_fraction=val_fraction, seed=seed
    )
    grid = np.array(sorted(alphas, reverse=True), x.dtype)  # ties -> stronger penalty
    w, b, best, val_grid, train, val = _ridge_jit(
        x[:, tr], yy[tr], x[:, va], yy[va], jnp.asarray(grid), fit_intercept=fit_intercept
    )
    return _to_host("ridge", w, b, grid, val_grid, best, train, val, "r2", None, tr, va)


# ---------------------------------------------------------------------------- logistic


def _logits(params, z, k: int):
    w, b = params
    return z @ w + b  # binary: [n]; softmax: [n, k]


def _nll(params, z, y, k: int):
    out = _logits(params, z, k)
    if k == 2:
        return jnp.sum(optax.sigmoid_binary_cross_entropy(out, y.astype(out.dtype)))
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(out, y))


def _lbfgs(f, params, steps: int, lr):
    opt = optax.lbfgs(
        learning_rate=lr,
        linesearch=optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=20, store_grad=True, rtol=RTOL
        ),
    )
    value_and_grad = optax.value_and_grad_from_state(f)

    def step(carry):
        p, state, i, _ = carry
        value, grad = value_and_grad(p, state=state)
        updates, new_state = opt.update(grad, state, p, value=value, grad=grad, value_fn=f)
        new_p = optax.apply_updates(p, updates)
        # a converged float32 line search can return non-finite steps: keep the last point
        ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(new_p)]))
        new_p = jax.tree.map(lambda a, o: jnp.where(ok, a, o), new_p, p)
        new_state = jax.tree.map(lambda a, o: jnp.where(ok, a, o), new_state, state)
        gmax = jnp.max(jnp.asarray([jnp.max(jnp.abs(g)) for g in jax.tree.leaves(grad)]))
        return new_p, new_state, i + 1, (gmax <= GTOL) | ~ok

    def more(carry):
        _, _, i, done = carry
        return (i < steps) & ~done

    init = (params, opt.init(params), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    params, _, _, _ = jax.lax.while_loop(more, step, init)
    return params


def _metrics(params, z, y, k: int):
    out = _logits(params, z, k)
    pred = (out > 0).astype(jnp.int32) if k == 2 else jnp.argmax(out, axis=-1)
    scores = out if k == 2 else jax.nn.softmax(out, axis=-1)
    return {
        "accuracy": _accuracy(y, pred),
        "balanced_accuracy": _balanced_accuracy(y, pred, k),
        "auroc": _auroc(y, scores, k),
    }


def _logistic_fit(x_tr, y_tr, x_va, y_va, cs, k: int, steps: int, lr):
    TRACE_COUNT["logistic"] += 1
    n, d = x_tr.shape[-2:]

    def one(zt, c):
        # mean-scaled objective (same minimiser): (sum logloss + 0.5/C ||w||²) / n
        f = lambda p: (_nll(p, zt, y_tr, k) + 0.5 / c * jnp.sum(p[0] ** 2)) / n
        shape = (d,) if k == 2 else (d, k)
        p0 = (jnp.zeros(shape, zt.dtype), jnp.zeros(shape[1:], zt.dtype))
        return _lbfgs(f, p0, steps, lr)

    def layer(xt, xv):
        zt, zv, mu, sd = standardise(xt, xv)
        params = jax.lax.map(lambda c: one(zt, c), cs)  # one fit after another: see below
        m_tr = jax.vmap(_metrics, in_axes=(0, None, None, None))(params, zt, y_tr, k)
        m_va = jax.vmap(_metrics, in_axes=(0, None, None, None))(params, zv, y_va, k)
        w0, b0 = jax.vmap(_original_space, in_axes=(0, 0, None, None))(params[0], params[1], mu, sd)
        return w0, b0, m_tr, m_va

    # Layers and C values run one after another (`lax.map`), not side by side (`vmap`):
    # each fit's rows then stay in cache for all its steps, and each fit's line search
    # stops when that fit accepts, not when the slowest of layers x C does. On 30 layers
    # x 4 C of 768 x 576 (one CPU thread) the vmapped version took 119 s, this one ~10x less.
    w, b, m_tr, m_va = jax.lax.map(lambda a: layer(*a), (x_tr, x_va))  # leaves [L, n_c, ...]
    acc = m_va["accuracy"]
    best = jnp.argmax(acc, axis=1)  # first max in grid order (ascending C)
    w, b, tr, va = _pick(best, (w, b, m_tr, m_va))
    return w, b, best, acc, tr, va


_logistic_jit = jax.jit(_logistic_fit, static_argnames=("k", "steps", "lr"))


def _logistic_core(x, codes, k, tr, va, cs, steps, lr, classes):
    if len(cs) == 0 or min(cs) <= 0:
        raise InputError(f"cs must be a non-empty sequence of values > 0, got {cs}")
    grid = np.array(sorted(cs), x.dtype)  # ascending: ties -> smaller C (stronger penalty)
    w, b, best, val_grid, train, val = _logistic_jit(
        x[:, tr], codes[tr], x[:, va], codes[va], jnp.asarray(grid), k=k, steps=steps, lr=lr
    )
    return _to_host("logistic", w, b, grid, val_grid, best, train, val, "accuracy", classes, tr, va)


def logistic(
    acts: ArrayLike,
    y: ArrayLike,
    *,
    cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    steps: int = 300,
    lr: float | None = None,
    val_fraction: float = 0.25,
    seed: int = 0,
    indices: tuple[ArrayLike, ArrayLike] | None = None,
) -> ProbeResult:
    """L2 logistic-regression probes of class labels `y` `[n]` on every layer of `acts`
    `[n_layers, n, d]`: sigmoid for 2 classes, softmax for more. C chosen per layer by
    validation accuracy (ties: the smaller C). `lr` is `optax.lbfgs`'s learning rate
    (None: the step the backtracking line search picks). The split is stratified by class.

    Metrics per layer (train and val): accuracy, balanced_accuracy, auroc (binary, or
    macro one-vs-rest). `indices`: explicit `(train_rows, val_rows)` instead of the
    seeded split (rows in neither, a held-out test set, are not used). The classes are
    those of the training rows: a validation row whose label training never saw (a rare
    digit, say) can never be predicted, so it counts as wrong in the accuracy, and is left
    out of the balanced accuracy and AUROC (which are over the training classes).
    """
    x = _check_acts(acts)
    yy = _check_labels(x, y)
    given = _indices(indices, x.shape[1])
    if given is not None:
        tr, va = given
        classes, _ = _classes(yy[tr], "y[train rows]")
        codes = np.full(yy.shape, classes.size, np.int32)  # k: a label training never saw
        seen = np.isin(yy, classes)
        codes[seen] = np.searchsorted(classes, yy[seen]).astype(np.int32)
        return _logistic_core(x, codes, int(classes.size), tr, va, cs, steps, lr, classes)
    classes, codes = _classes(yy)
    tr, va = split(x.shape[1], val_fraction=val_fraction, seed=seed, stratify=codes)
    return _logistic_core(x, codes, int(classes.size), tr, va, cs, steps, lr, classes)


# ---------------------------------------------------------------------------- control tasks


def control_labels(types: ArrayLike, n_classes: int, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang's control task: every distinct value of `types` `[n]` (a token id,
    a word index) gets a class drawn uniformly from `0..n_classes-1`, fixed for that type.
    Returns int32 `[n]`."""
    t = np.asarray(types)
    if t.ndim != 1:
        raise InputError(f"types must be 1-D [n_examples], got shape {t.shape}")
    if n_classes < 2:
        raise InputError(f"n_classes must be at least 2, got {n_classes}")
    uniq, inv = np.unique(t, return_inverse=True)
    per_type = np.random.default_rng(seed).integers(0, n_classes, uniq.size)
    return per_type[inv].astype(np.int32)


class Selectivity(NamedTuple):
    """Per layer `[n_layers]`: `selectivity = task_accuracy - control_accuracy` (validation
    accuracies), with the two probes."""

    selectivity: np.ndarray
    task_accuracy: np.ndarray
    control_accuracy: np.ndarray
    task: ProbeResult
    control: ProbeResult


def selectivity(
    acts: ArrayLike,
    y: ArrayLike,
    types: ArrayLike,
    *,
    n_control_classes: int | None = None,
    cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    steps: int = 300,
    lr: float | None = None,
    val_fraction: float = 0.25,
    seed: int = 0,
) -> Selectivity:
    """Hewitt & Liang 2019 selectivity per layer: the logistic probe's validation accuracy
    on `y` minus its validation accuracy on `control_labels(types, n_control_classes)`
    (default: as many classes as `y` has), with the same split (stratified by `y`), grid and
    optimiser."""
    x = _check_acts(acts)
    yy = _check_labels(x, y)
    tt = _check_labels(x, types, "types")
    classes, codes = _classes(yy)
    k_ctl = int(classes.size) if n_control_classes is None else n_control_classes
    ctl = control_labels(tt, k_ctl, seed)
    ctl_classes, ctl_codes = _classes(ctl, "control labels")
    tr, va = split(x.shape[1], val_fraction=val_fraction, seed=seed, stratify=codes)
    task = _logistic_core(x, codes, int(classes.size), tr, va, cs, steps, lr, classes)
    control = _logistic_core(
        x, ctl_codes, int(ctl_classes.size), tr, va, cs, steps, lr, ctl_classes
    )
    ta, ca = task.val["accuracy"], control.val["accuracy"]
    return Selectivity(ta - ca, ta, ca, task, control)


# The digit probes of arithmetic-error detection live in their own module and are part of
# this one's API (imported last: they build on `logistic`).
from mechjax.probe_digits import DigitProbes, digit_probes, digits, disagreement  # noqa: E402
