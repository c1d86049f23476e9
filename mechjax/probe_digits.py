"""Digit probes for arithmetic-error detection (Sun, Stolfo & Sachan 2025, "Probing for
Arithmetic Errors in Language Models"), re-exported by `mechjax.probes`.

A softmax probe per digit position reads a digit of the model's answer, or of the gold
answer, from the hidden state before the answer (`digit_probes`, built on
`probes.logistic`); comparing the two readings flags errors (`disagreement`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from jax.typing import ArrayLike

from mechjax.errors import InputError
from mechjax.probes import ProbeResult, _check_acts, _check_labels, _indices, logistic

__all__ = ["DigitProbes", "digit_probes", "digits", "disagreement"]


def digits(values: ArrayLike, n_digits: int) -> np.ndarray:
    """Decimal digits of non-negative integers `[n]` -> int32 `[n, n_digits]`, column j the
    digit of 10^j (units first). A value with more than `n_digits` digits is an error (its
    top digits would be lost)."""
    v = np.asarray(values)
    if v.ndim != 1 or not np.issubdtype(v.dtype, np.integer):
        raise InputError(f"values must be 1-D integers, got {v.dtype} {v.shape}")
    if n_digits < 1:
        raise InputError(f"n_digits must be >= 1, got {n_digits}")
    if v.size and v.min() < 0:
        raise InputError(f"values must be >= 0; got {int(v.min())} (row {int(v.argmin())})")
    if v.size and v.max() >= 10**n_digits:
        raise InputError(
            f"value {int(v.max())} (row {int(v.argmax())}) has more than {n_digits} digits"
        )
    return ((v[:, None] // 10 ** np.arange(n_digits)) % 10).astype(np.int32)


class DigitProbes(NamedTuple):
    """One softmax (or, for a digit with two values, binary) probe per digit position,
    units first. `proba` spreads each probe's classes over the ten digits (a digit the
    training rows never showed gets probability 0)."""

    probes: tuple[ProbeResult, ...]

    @property
    def n_digits(self) -> int:
        return len(self.probes)

    def proba(self, acts_layer: ArrayLike, layer: int) -> np.ndarray:
        """`[n, n_digits, 10]` digit probabilities at `layer`."""
        cols = []
        for p in self.probes:
            pr = p.proba(acts_layer, layer)
            full = np.zeros((pr.shape[0], 10))
            assert p.classes is not None
            full[:, np.asarray(p.classes, int)] = pr
            cols.append(full)
        return np.stack(cols, axis=1)

    def predict(self, acts_layer: ArrayLike, layer: int) -> np.ndarray:
        """`[n, n_digits]` decoded digits at `layer`."""
        return self.proba(acts_layer, layer).argmax(axis=-1)

    def accuracy(self, acts: ArrayLike, values: ArrayLike, rows: ArrayLike) -> np.ndarray:
        """`[n_layers, n_digits]` accuracy of every layer's probes on `rows` of `acts`
        `[n_layers, n, d]` against the digits of `values` `[n]`."""
        x = _check_acts(acts)
        r = np.asarray(rows)
        want = digits(_check_labels(x, values, "values")[r], self.n_digits)
        return np.stack(
            [(self.predict(x[l, r], l) == want).mean(axis=0) for l in range(x.shape[0])]
        )


def digit_probes(
    acts: ArrayLike,
    values: ArrayLike,
    n_digits: int,
    *,
    indices: tuple[ArrayLike, ArrayLike],
    cs: Sequence[float] = (0.01, 0.1, 1.0),
    steps: int = 200,
    lr: float | None = None,
) -> DigitProbes:
    """A `logistic` probe per digit position of `values` `[n]` (units first), on every
    layer of `acts` `[n_layers, n, d]`, with the given `(train_rows, val_rows)` (so that
    probes of the predicted and of the gold answer share one split and a test set can be
    held out). A digit position constant over the training rows is an error: nothing to
    decode (lower `n_digits`)."""
    x = _check_acts(acts)
    dg = digits(_check_labels(x, values, "values"), n_digits)
    given = _indices(indices, x.shape[1])
    if given is None:
        raise InputError("digit_probes needs indices=(train_rows, val_rows)")
    tr, va = given
    for j in range(n_digits):  # every position checked before any fit
        if np.unique(dg[tr, j]).size < 2:
            raise InputError(
                f"digit 10^{j} is {int(dg[tr[0], j])} in every training row: nothing to decode"
            )
    out = []
    for j in range(n_digits):
        out.append(logistic(x, dg[:, j], cs=cs, steps=steps, lr=lr, indices=(tr, va)))
    return DigitProbes(tuple(out))


def disagreement(
    predicted: DigitProbes, gold: DigitProbes, acts_layer: ArrayLike, layer: int
) -> tuple[np.ndarray, np.ndarray]:
    """The digit-comparison error detector: decode the model's answer and the gold answer
    from the same hidden states `[n, d]` and compare.

    Returns `(score, flag)`, each `[n]`: `flag` is True where the argmax digits disagree at
    any position; `score` = 1 - prod_j sum_c p_pred[j, c] p_gold[j, c], the probability
    that the two readings differ when each position's two readings are drawn from their
    probes independently (for AUROC).
    """
    if predicted.n_digits != gold.n_digits:
        raise InputError(
            f"predicted probes read {predicted.n_digits} digits, gold probes {gold.n_digits}"
        )
    pp, pg = predicted.proba(acts_layer, layer), gold.proba(acts_layer, layer)
    same = np.prod(np.sum(pp * pg, axis=-1), axis=-1)
    flag = np.any(pp.argmax(-1) != pg.argmax(-1), axis=-1)
    return 1.0 - same, flag
