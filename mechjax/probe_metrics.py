"""The metrics of `mechjax.probes`, re-exported there: jnp cores traced inside the fits
(`_accuracy`, `_balanced_accuracy`, `_auroc`, `_r2`) and host functions returning floats,
equal to scikit-learn's `accuracy_score`, `balanced_accuracy_score`, `roc_auc_score`
(binary: Mann-Whitney U with average ranks for ties; multiclass: macro one-vs-rest) and
`r2_score`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mechjax.errors import InputError

__all__ = ["accuracy", "auroc", "balanced_accuracy", "r2"]


def _accuracy(y, pred):
    return jnp.mean((y == pred).astype(jnp.float32))


def _balanced_accuracy(y, pred, k: int):
    onehot = jax.nn.one_hot(y, k)
    count = onehot.sum(0)
    hit = (onehot * (y == pred)[:, None]).sum(0)
    present = count > 0
    recall = jnp.where(present, hit / jnp.maximum(count, 1), 0.0)
    return recall.sum() / present.sum()


def _avg_ranks(s):
    """1-based ranks with ties given their average rank."""
    srt = jnp.sort(s)
    lo = jnp.searchsorted(srt, s, side="left")
    hi = jnp.searchsorted(srt, s, side="right")
    return (lo + hi + 1) / 2.0


def _auroc_binary(pos, s):
    """Mann-Whitney U / (n_pos n_neg); `pos` boolean [n]. NaN without both classes."""
    pos = pos.astype(s.dtype)
    n_pos = pos.sum()
    n_neg = pos.shape[0] - n_pos
    u = (_avg_ranks(s) * pos).sum() - n_pos * (n_pos + 1) / 2
    return jnp.where((n_pos > 0) & (n_neg > 0), u / jnp.maximum(n_pos * n_neg, 1), jnp.nan)


def _auroc(y, scores, k: int):
    """Binary: `scores` [n] for class 1. Multiclass: [n, k], macro over one-vs-rest, over
    the classes present in `y` (with some other class present too)."""
    if k == 2:
        return _auroc_binary(y == 1, scores)
    per = jax.vmap(lambda c, s: _auroc_binary(y == c, s), in_axes=(0, 1))(jnp.arange(k), scores)
    ok = ~jnp.isnan(per)
    return jnp.where(ok, per, 0.0).sum() / ok.sum()


def _r2(y, pred):
    ss_res = jnp.sum((y - pred) ** 2)
    ss_tot = jnp.sum((y - jnp.mean(y)) ** 2)
    return 1.0 - ss_res / jnp.maximum(ss_tot, jnp.finfo(ss_tot.dtype).tiny)


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of `y_pred` equal to `y_true`."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean recall over the classes present in `y_true` (scikit-learn's convention)."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(yt)
    return float(np.mean([np.mean(yp[yt == c] == c) for c in classes]))


def auroc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve. Binary (`scores` [n], higher = the larger label): the
    Mann-Whitney U statistic with average ranks for ties. Multiclass (`scores` [n, k],
    columns in sorted label order): macro average of one-vs-rest AUROCs."""
    yt, s = np.asarray(y_true), np.asarray(scores, np.float64)
    classes, codes = np.unique(yt, return_inverse=True)
    if classes.size < 2:
        raise InputError(f"auroc needs two classes in y_true, got only {classes.tolist()}")
    if s.ndim == 1:
        if classes.size != 2:
            raise InputError(
                f"y_true has {classes.size} classes; multiclass auroc needs scores [n, k]"
            )
        return float(_auroc_binary(jnp.asarray(codes == 1), jnp.asarray(s)))
    if s.shape != (yt.size, classes.size):
        raise InputError(
            f"scores have shape {s.shape}; expected ({yt.size}, {classes.size}) for "
            f"{classes.size} classes"
        )
    per = [
        float(_auroc_binary(jnp.asarray(codes == c), jnp.asarray(s[:, c])))
        for c in range(classes.size)
    ]
    return float(np.mean(per))


def r2(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Coefficient of determination `1 - SS_res / SS_tot`."""
    yt, yp = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    ss_tot = np.sum((yt - yt.mean()) ** 2)
    return float(1.0 - np.sum((yt - yp) ** 2) / ss_tot)
