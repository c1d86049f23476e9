"""Interchange interventions at a site, as an intervention value for `mj.run`.

`interchange_at(featurizer, source, positions, source_positions=None)` builds an
`Interchange`: at each base row b and each of its positions `positions[b, j]`, the site's
activation h becomes `F^-1(F(h) with the variable's features taken from F(s))`, where s
is the source activation at `source_positions[b, j]`. Positions are per example (the IO
name is not at the same token in every prompt), so bases and sources of different
lengths pair up exactly. With the identity featurizer over every dimension this is
activation patching of those positions.

Several variables from several sources at once: give `source` a leading source axis
`[n_src, batch, pos, d]` and `masks` (bool `[n_src, n_features]`), one per source.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mechjax.causal.featurizers import Featurizer, interchange, interchange_many
from mechjax.errors import InputError, InterventionError
from mechjax.interventions import Intervention, _poison, check_index_range
from mechjax.typing import is_tracer

Array = jax.Array


def _rows(positions, batch: int, what: str) -> Array | np.ndarray:
    pos = positions if is_tracer(positions) else np.asarray(positions)
    if pos.ndim == 0:
        pos = (
            pos.reshape(1, 1).repeat(batch, 0) if not is_tracer(pos) else jnp.full((batch, 1), pos)
        )
    elif pos.ndim == 1:
        pos = pos[:, None]
    if pos.ndim != 2 or pos.shape[0] != batch:
        raise InputError(
            f"{what} must be one index, [batch] or [batch, k] with batch = {batch}, "
            f"got shape {tuple(pos.shape)}"
        )
    return pos


def gather(acts: Array, positions) -> Array:
    """`acts [batch, pos, d]` at per-row positions `[batch, k]` -> `[batch, k, d]`."""
    pos = jnp.asarray(positions)
    return jnp.take_along_axis(acts, pos[:, :, None], axis=1)


def scatter(acts: Array, positions, values: Array) -> Array:
    """`acts` with `values [batch, k, d]` written at per-row `positions [batch, k]`."""
    pos = jnp.asarray(positions)
    rows = jnp.arange(acts.shape[0])[:, None]
    return acts.at[rows, pos].set(values.astype(acts.dtype))


@struct.dataclass
class Interchange(Intervention):
    """Interchange the featurizer's masked features at per-row positions (see module)."""

    featurizer: Featurizer
    source: Array  # [batch, k, d] or [n_src, batch, k, d]
    positions: Any  # [batch, k]
    masks: Any = None  # bool [n_src, n_features] with several sources
    temperature: Any = None  # soft mask while training
    every_position: bool = struct.field(pytree_node=False, default=False)

    def apply(self, x, site):
        if x.ndim != 3:
            raise InterventionError(
                f"interchange at site {site!r}: the activation has shape {tuple(x.shape)}; "
                "interchange needs a [batch, pos, d] site (a residual stream, an MLP or "
                "attention output, or one head's output through hook_z's layout flattened)"
            )
        d = self.featurizer.width
        if x.shape[-1] != d:
            raise InterventionError(
                f"interchange at site {site!r}: the featurizer reads width {d}, but the "
                f"activation has width {x.shape[-1]}"
            )
        want = (x.shape[0], self.positions.shape[1], d)
        got = tuple(self.source.shape[-3:])
        if got != want:
            raise InterventionError(
                f"interchange at site {site!r}: source vectors have shape "
                f"{tuple(self.source.shape)}, expected {want} ([batch, k, d], with a leading "
                "source axis for several sources)"
            )
        if self.every_position and x.shape[1] != self.source.shape[-2]:
            raise InterventionError(
                f"interchange at site {site!r} without positions: the base has "
                f"{x.shape[1]} positions and the source {self.source.shape[-2]}; pass "
                "positions= and source_positions= (per row) to pair bases and sources of "
                "different lengths"
            )
        bad = check_index_range(self.positions, x.shape[1], site, "positions", "pos")
        pos = jnp.where(self.positions < 0, self.positions + x.shape[1], self.positions)
        hb = gather(x, pos)
        if self.masks is None:
            new = interchange(self.featurizer, hb, self.source, self.temperature)
        else:
            new = interchange_many(self.featurizer, self.masks, hb, self.source)
        return _poison(scatter(x, pos, new), bad)


def interchange_at(
    featurizer: Featurizer,
    source,
    positions=None,
    source_positions=None,
    *,
    masks=None,
    temperature=None,
) -> Interchange:
    """An `Interchange` for `mj.run`.

    Args:
      featurizer: the featurizer whose masked features are swapped.
      source: the source run's activations at the site, `[batch, pos_s, d]`, read at
        `source_positions`. With several sources, a leading source axis and `masks`.
        (Source vectors already read, `[batch, k, d]`, go to `Interchange` directly.)
      positions: the base positions, one index, `[batch]` or `[batch, k]`. None: every
        position, which needs bases and sources of the same length.
      source_positions: where to read the source, same shape rules; default = positions.
    """
    source = jnp.asarray(source)
    many = masks is not None
    batch = source.shape[1] if many else source.shape[0]
    if positions is None:
        if source_positions is not None:
            raise InputError("interchange_at: source_positions given without positions")
        n = source.shape[-2]
        positions = np.broadcast_to(np.arange(n), (batch, n))
        return Interchange(featurizer, source, np.asarray(positions), masks, temperature, True)
    pos = _rows(positions, batch, "positions")
    spos = pos if source_positions is None else _rows(source_positions, batch, "source_positions")
    if spos.shape != pos.shape:
        raise InputError(
            f"interchange_at: positions {tuple(pos.shape)} and source_positions "
            f"{tuple(spos.shape)} must have the same shape"
        )
    if many:
        vecs = jax.vmap(lambda s: gather(s, spos))(source)
    else:
        vecs = gather(source, spos)
    return Interchange(
        featurizer, vecs, pos, None if masks is None else jnp.asarray(masks), temperature
    )
