"""Causal mediation analysis of arithmetic (Stolfo, Belinkov, Sachan, EMNLP 2023) and the
total/direct effects of the causal robustness framework (Stolfo, Jin et al., ACL 2023).

- `ie_grid`: run the base prompt with one mediator (attention output or MLP output at
  one layer and position) set to its value on the alternative prompt, and measure
  IE = 1/2 [(P(r) - P*(r))/P*(r) + (P*(r') - P(r'))/P(r')] (r = base result, r' = alt
  result); one compiled `patching.patch_sweep` per mediator kind ("noise" direction:
  the clean run is the base prompt).
- `causal_effect`: input interventions (operands, operator, surface text) as a
  `TaskBatch` (clean = base prompt, corrupted = intervened prompt); P restricted to the
  number tokens; relative confidence change (the IE formula when the result changes,
  the max-ratio form when it does not) and the change in prediction.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mechjax import metrics as M
from mechjax.interventions import Intervention
from mechjax.model import Model, run
from mechjax.patching import patch_sweep

__all__ = ["IndirectEffect", "causal_effect", "ie_grid", "ie_per_pair", "number_token_ids"]


@struct.dataclass
class IndirectEffect:
    """IE of a patched run against the base run's P(r), P(r') (averaged over the batch).

    `candidates` restricts the softmax (number tokens; None = full vocabulary); answers
    and wrongs are then indices into `candidates`.
    """

    answers: Any
    wrongs: Any
    p_r: Any
    p_alt: Any
    candidates: Any = None

    def probs(self, logits):
        if self.candidates is None:
            p = jax.nn.softmax(M.logits_at(logits).astype(jnp.float32), -1)
        else:
            p = M.restricted_probs(logits, self.candidates)
        take = lambda ids: jnp.take_along_axis(p, jnp.asarray(ids)[:, None], 1)[:, 0]  # noqa
        return take(self.answers), take(self.wrongs)

    def per_pair(self, logits):
        """IE of each batch element [batch]."""
        p_star_r, p_star_alt = self.probs(logits)
        return M.indirect_effect(self.p_r, p_star_r, self.p_alt, p_star_alt)

    def __call__(self, logits):
        return self.per_pair(logits).mean()


def number_token_ids(tokenizer, max_n: int = 9, space: bool = False) -> np.ndarray:
    """Ids of the single-token numbers 0..max_n (with a leading space if `space`)."""
    return np.asarray(
        [
            tokenizer.encode(f"{' ' if space else ''}{i}", add_bos=False)[0]
            for i in range(max_n + 1)
        ],
        np.int32,
    )


def _indices_in(candidates, ids, what: str) -> np.ndarray:
    """Positions of `ids` in `candidates`; a clear error naming the ids that are absent."""
    cand = np.asarray(candidates).reshape(-1)
    ids = np.asarray(ids).reshape(-1)
    missing = sorted({int(i) for i in ids if not (cand == i).any()})
    if missing:
        raise ValueError(
            f"{what} {missing[:10]} not among the {cand.size} candidate token ids "
            f"({cand[:10].tolist()}{' ...' if cand.size > 10 else ''}); P is "
            f"restricted to the candidates, so every answer must be one of them"
        )
    return np.asarray([int(np.flatnonzero(cand == i)[0]) for i in ids], np.int32)


def _check_pair(batch) -> None:
    clean, corr = np.asarray(batch.clean), np.asarray(batch.corrupted)
    if clean.shape != corr.shape or clean.ndim != 2:
        raise ValueError(
            f"base (clean) tokens {clean.shape} and alt (corrupted) tokens "
            f"{corr.shape} must both be [batch, pos] of the same shape"
        )
    n = clean.shape[0]
    for what in ("answers", "wrongs"):
        if np.asarray(getattr(batch, what)).shape != (n,):
            raise ValueError(
                f"{what} must be [batch] = ({n},), got {np.asarray(getattr(batch, what)).shape}"
            )


def _probe(batch, candidates) -> IndirectEffect:
    """The IE metric of `batch` before the base run is known (P(r), P(r') still 1)."""
    _check_pair(batch)
    ans, wr = np.asarray(batch.answers), np.asarray(batch.wrongs)
    if candidates is not None:
        ans = _indices_in(candidates, ans, "answers (r)")
        wr = _indices_in(candidates, wr, "wrongs (r')")
    return IndirectEffect(
        jnp.asarray(ans),
        jnp.asarray(wr),
        1.0,
        1.0,
        None if candidates is None else jnp.asarray(candidates),
    )


def _with_base(probe: IndirectEffect, base_logits) -> IndirectEffect:
    p_r, p_alt = probe.probs(base_logits)
    return dataclasses.replace(probe, p_r=p_r, p_alt=p_alt)


def _ie_metric(model, batch, candidates):
    probe = _probe(batch, candidates)
    return _with_base(probe, run(model, jnp.asarray(batch.clean)).logits)


def ie_grid(
    model: Model,
    batch,
    kinds: Sequence[str] = ("attn_out", "mlp_out"),
    *,
    candidates=None,
    chunk_size: int | None = None,
    positions=None,
    layers=None,
) -> dict:
    """{kind: IE grid [layer, pos]} for a base/alt `TaskBatch` (e.g. `tasks.arithmetic`).

    `positions` restricts the mediators to those absolute positions (e.g. `[-1]`, the
    last), or names the batch's named positions (`["op1", "end"]`, looked up in
    `batch.positions`), each row patched at its own index of that name; the grid's
    columns then follow the names. `layers` restricts them to those layers (default
    all; the grid's rows then follow this order): the sweep's compile and run time
    shrink with the layers left out.
    """
    metric = _ie_metric(model, batch, candidates)
    return {
        k: patch_sweep(
            model,
            batch.clean,
            batch.corrupted,
            metric,
            k,
            mode="noise",
            chunk_size=chunk_size,
            positions=positions,
            layers=layers,
            batch_positions=getattr(batch, "positions", None),
        ).grid
        for k in kinds
    }


def ie_per_pair(
    model: Model, batch, kind: str, layer: int, pos: int, *, candidates=None
) -> np.ndarray:
    """IE of one mediator (`kind` at `layer`, `pos`) for each pair of `batch`: [batch].

    `ie_grid` averages over the pairs inside its compiled sweep; this is the spread
    behind one of its cells (its mean equals the cell), from one patched forward. It is
    also the cheap way to a few cells of long prompts (one compile per site, reused for
    every position and every batch of the same shape).
    """
    from mechjax import sites as sites_mod

    name = sites_mod.act_name(kind, layer)
    sites_mod.check([name], model.sites)
    P = np.asarray(batch.clean).shape[1]
    if not 0 <= pos < P:
        raise ValueError(f"pos {pos} outside the prompts' {P} positions")
    return np.asarray(
        _patched_ie(
            model,
            jnp.asarray(batch.clean),
            jnp.asarray(batch.corrupted),
            _probe(batch, candidates),
            name,
            jnp.asarray(pos, jnp.int32),
        )
    )


@struct.dataclass
class _PatchThirdFromSecond(Intervention):
    """On a batch [base; alt; base] (three equal parts), set the third part's activation
    at position `pos` to the second part's (the alt run's value at that site, computed
    in the same forward): the patched base run of `ie_per_pair` alongside its references."""

    pos: Any

    def apply(self, x, site):
        from mechjax import sites as sites_mod

        pos_axis = sites_mod.axes(site)[0]
        b = x.shape[0] // 3
        at = jnp.arange(x.shape[pos_axis]) == self.pos
        at = at.reshape(at.shape + (1,) * (x.ndim - pos_axis - 1))
        return jnp.concatenate([x[: 2 * b], jnp.where(at, x[b : 2 * b], x[2 * b :])])


@partial(jax.jit, static_argnames=("name",))
def _patched_ie(model, clean, corrupted, probe, name, pos):
    """Base, alt and patched base runs as one batch of one forward: the alt activation
    is copied into the patched rows at the site as it is computed (layers below it are
    the same in the base and patched rows). One program per site and prompt shape, any
    `pos` (a traced index), and a single forward to compile."""
    b = clean.shape[0]
    logits = run(
        model,
        jnp.concatenate([clean, corrupted, clean]),
        hooks={name: _PatchThirdFromSecond(pos)},
    ).logits
    metric = _with_base(probe, logits[:b])
    return metric.per_pair(logits[2 * b :])


def causal_effect(model: Model, batch, number_ids, *, result_changes: bool = True) -> dict:
    """Total or direct causal effect of an input intervention (P over number tokens).

    Returns the mean relative confidence change (`rcc`), the mean change in prediction
    (`changed`: argmax differs) and the code's `|argmax P - argmax P'|` (`abs_diff`).
    """
    _check_pair(batch)
    r = jnp.asarray(_indices_in(number_ids, batch.answers, "answers (r)"))
    r2 = jnp.asarray(_indices_in(number_ids, batch.wrongs, "wrongs (r')"))
    cand = jnp.asarray(number_ids)
    p = M.restricted_probs(run(model, jnp.asarray(batch.clean)).logits, cand)
    q = M.restricted_probs(run(model, jnp.asarray(batch.corrupted)).logits, cand)
    take = lambda d, i: jnp.take_along_axis(d, i[:, None], 1)[:, 0]  # noqa
    rcc = M.relative_confidence_change(
        take(p, r), take(q, r), take(p, r2), take(q, r2), result_changes
    )
    a, b = p.argmax(-1), q.argmax(-1)
    return {
        "rcc": float(rcc.mean()),
        "changed": float((a != b).mean()),
        "abs_diff": float(jnp.abs(a - b).mean()),
    }
