"""Metrics of patching, attribution and mediation experiments.

Plain functions of logits (`logit_diff`, `answer_prob`, `kl_to_clean`, ...) and, for use
inside compiled sweeps, the same metrics as small pytrees (`LogitDiff`, `AnswerProb`,
...): their answer ids and positions are array leaves, so a new batch of the same shape
reuses the compiled program instead of baking the ids in as constants.

Conventions:
- logits are `[batch, pos, d_vocab]`; a metric reads them at `positions` (one per batch
  row, default the last position) and averages over the batch;
- `indirect_effect` is the causal-mediation effect of Stolfo et al. (EMNLP 2023,
  `alestolfo/lm-arithmetic:notebooks/notebooks_utils.py:compute_effects`):
  IE = 1/2 [(P(r) - P*(r)) / P*(r) + (P*(r') - P(r')) / P(r')];
- `normalized_metric` maps the corrupted run to 0 and the clean run to 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, ArrayLike, Float, Int

from mechjax.errors import InputError

__all__ = [
    "AnswerLogProb",
    "AnswerProb",
    "KLToClean",
    "LogitDiff",
    "Negate",
    "RestrictedProb",
    "answer_logprob",
    "answer_prob",
    "effect_average_diff",
    "effect_increase_p_res_alt",
    "indirect_effect",
    "kl_to_clean",
    "logit_diff",
    "logits_at",
    "normalized_metric",
    "relative_confidence_change",
    "restricted_probs",
]


def logits_at(
    logits: Float[Array, "batch pos d_vocab"], positions=None
) -> Float[Array, "batch d_vocab"]:
    """The logits at one position per batch row (default: the last position).

    `positions` may be negative (counted from the end) and is `[batch]` or a scalar.
    """
    if logits.ndim != 3:
        raise InputError(f"logits must be [batch, pos, d_vocab], got shape {tuple(logits.shape)}")
    if positions is None:
        return logits[:, -1]
    n = logits.shape[1]
    pos = jnp.broadcast_to(jnp.asarray(positions, jnp.int32), logits.shape[:1])
    pos = jnp.where(pos < 0, pos + n, pos)
    return jnp.take_along_axis(logits, pos[:, None, None], axis=1)[:, 0]


def _gather(x: Float[Array, "batch d_vocab"], ids) -> Float[Array, " batch"]:
    ids = jnp.broadcast_to(jnp.asarray(ids, jnp.int32), x.shape[:1])
    return jnp.take_along_axis(x, ids[:, None], axis=1)[:, 0]


def _reduce(x, mean: bool):
    return x.mean() if mean else x


def logit_diff(
    logits,
    answers: Int[ArrayLike, " batch"] | Sequence[int],
    wrongs: Int[ArrayLike, " batch"] | Sequence[int],
    positions=None,
    *,
    mean: bool = True,
):
    """logit[answer] - logit[wrong] at `positions`, averaged over the batch if `mean`."""
    x = logits_at(logits, positions)
    return _reduce(_gather(x, answers) - _gather(x, wrongs), mean)


def answer_logprob(logits, answers, positions=None, *, mean: bool = True):
    """log P(answer) at `positions` (full-vocabulary softmax)."""
    x = jax.nn.log_softmax(logits_at(logits, positions).astype(jnp.float32), axis=-1)
    return _reduce(_gather(x, answers), mean)


def answer_prob(logits, answers, positions=None, *, mean: bool = True):
    """P(answer) at `positions` (full-vocabulary softmax)."""
    return _reduce(jnp.exp(answer_logprob(logits, answers, positions, mean=False)), mean)


def kl_to_clean(logits, clean_logits, positions=None, *, mean: bool = True):
    """KL(P_clean || P) at `positions`, in nats."""
    lp = jax.nn.log_softmax(logits_at(logits, positions).astype(jnp.float32), -1)
    lq = jax.nn.log_softmax(logits_at(clean_logits, positions).astype(jnp.float32), -1)
    return _reduce(jnp.sum(jnp.exp(lq) * (lq - lp), -1), mean)


def restricted_probs(logits, candidate_ids: Int[ArrayLike, " n"] | Sequence[int], positions=None):
    """Softmax over the `candidate_ids` only (e.g. the number tokens), `[batch, n]`.

    The causal robustness framework (Stolfo, Jin et al. ACL 2023,
    `result_utils.process_intervention_results`) restricts P(R) to number tokens.
    """
    x = logits_at(logits, positions).astype(jnp.float32)
    return jax.nn.softmax(x[:, jnp.asarray(candidate_ids, jnp.int32)], axis=-1)


# ------------------------------------------------------------------ mediation effects


def indirect_effect(p_r, p_star_r, p_alt, p_star_alt):
    """IE = 1/2 [(P(r) - P*(r)) / P*(r) + (P*(r') - P(r')) / P(r')].

    P is the base (clean) run, P* the intervened run, r the base result and r' the
    alternative result (Stolfo et al. 2023). Elementwise; average it yourself.
    """
    return 0.5 * ((p_r - p_star_r) / p_star_r + (p_star_alt - p_alt) / p_alt)


def effect_average_diff(p_r, p_star_r, p_alt, p_star_alt):
    """(P(r) - P*(r)) + (P*(r') - P(r')) (`effect_average_diff` of lm-arithmetic)."""
    return (p_r - p_star_r) + (p_star_alt - p_alt)


def effect_increase_p_res_alt(p_alt, p_star_alt):
    """P*(r') - P(r') (`effect_increase_p_res_alt` of lm-arithmetic)."""
    return p_star_alt - p_alt


def relative_confidence_change(p_r, p_star_r, p_alt, p_star_alt, result_changes: bool = True):
    """The robustness framework's relative confidence change.

    When the result changes (intervention types 1b and 4) this is the IE formula. When it
    does not (types 2 and 3) it is max((P(r)-P'(r))/P'(r), (P'(r)-P(r))/P(r)).
    """
    if result_changes:
        return indirect_effect(p_r, p_star_r, p_alt, p_star_alt)
    return jnp.maximum((p_r - p_star_r) / p_star_r, (p_star_r - p_r) / p_r)


def normalized_metric(value, clean_value, corrupted_value):
    """(value - corrupted) / (clean - corrupted): 0 = corrupted run, 1 = clean run."""
    denom = clean_value - corrupted_value
    return (value - corrupted_value) / jnp.where(denom == 0, jnp.nan, denom)


# ------------------------------------------------------------------ metrics as pytrees


@struct.dataclass
class LogitDiff:
    """`logit_diff` with its ids as leaves: `LogitDiff(answers, wrongs)(logits) -> scalar`."""

    answers: Any
    wrongs: Any
    positions: Any = None

    def __call__(self, logits):
        return logit_diff(logits, self.answers, self.wrongs, self.positions)


@struct.dataclass
class AnswerProb:
    answers: Any
    positions: Any = None

    def __call__(self, logits):
        return answer_prob(logits, self.answers, self.positions)


@struct.dataclass
class AnswerLogProb:
    answers: Any
    positions: Any = None

    def __call__(self, logits):
        return answer_logprob(logits, self.answers, self.positions)


@struct.dataclass
class KLToClean:
    clean_logits: Any
    positions: Any = None

    def __call__(self, logits):
        return kl_to_clean(logits, self.clean_logits, self.positions)


@struct.dataclass
class RestrictedProb:
    """Mean probability of `answers` under the softmax restricted to `candidates`.

    `answers` are indices *into* `candidates` (not vocabulary ids).
    """

    candidates: Any
    answers: Any
    positions: Any = None

    def __call__(self, logits):
        p = restricted_probs(logits, self.candidates, self.positions)
        return _gather(p, self.answers).mean()


@struct.dataclass
class Negate:
    """-metric: a loss, as EAP-IG's `loss=True` (e.g. `Negate(LogitDiff(...))`)."""

    metric: Any

    def __call__(self, logits):
        return -self.metric(logits)


Metric = Callable[[jax.Array], jax.Array]


_ONE_POSITION = (LogitDiff, AnswerProb, AnswerLogProb, RestrictedProb)


def narrow(metric, n_pos: int):
    """(row positions [batch] or None, metric on one-position logits) for a known metric.

    The metric pytrees above read the logits at one position per batch row. A sweep
    that knows this unembeds only those rows (`[batch, 1, d_vocab]` logits) instead of
    every position: on a 50k vocabulary the unembedding is about a third of a
    prefix-reused patching run. Returns None for any other callable (it gets the full
    logits). `n_pos` resolves negative and default (last) positions.
    """
    if isinstance(metric, Negate):
        inner = narrow(metric.metric, n_pos)
        return None if inner is None else (inner[0], Negate(inner[1]))
    if isinstance(metric, _ONE_POSITION + (KLToClean,)):
        pos = metric.positions
        pos = jnp.asarray(n_pos - 1 if pos is None else pos, jnp.int32)
        pos = jnp.where(pos < 0, pos + n_pos, pos)
        one = dataclasses.replace(metric, positions=None)
        if isinstance(metric, KLToClean):
            clean = jnp.asarray(metric.clean_logits)
            rows = jnp.broadcast_to(pos, clean.shape[:1])
            one = dataclasses.replace(
                one, clean_logits=jnp.take_along_axis(clean, rows[:, None, None], 1)
            )
        return pos, one
    return None
