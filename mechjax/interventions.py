"""Interventions: small frozen pytrees applied at a site.

An intervention holds its *structure* as static fields (what it does, its mode) and its
*values* as array leaves (patch values, deltas, directions, positions, heads, parameters
of a function). Because values are leaves, `jax.vmap` sweeps over them and `jax.grad`
differentiates them; because nothing is closed over, a sweep never recompiles.

Positions and heads are integer array leaves too, so a sweep over positions or heads is
a `vmap` over an index array. Negative positions count from the end. A site without a
head axis refuses `heads=`.

Shapes: a value (patch value, delta, ...) must have the activation's shape or a suffix of
it (`[pos, d_model]` or `[d_model]` for a `[batch, pos, d_model]` site): it is
broadcast over the leading axes. Anything else raises `InterventionError` naming the
site and both shapes.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from mechjax import sites
from mechjax.errors import InterventionError

Array = jax.Array


def _as_index(x) -> Array | None:
    if x is None:
        return None
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise InterventionError(f"positions/heads must be integers, got dtype {arr.dtype}")
    return jnp.atleast_1d(arr).astype(jnp.int32)


def _selection_mask(x: Array, site: str, positions, heads) -> Array | None:
    """Boolean mask broadcastable to `x` selecting the chosen positions and heads."""
    if positions is None and heads is None:
        return None
    pos_axis, head_axis = sites.axes(site)
    mask = jnp.ones((), bool)
    if positions is not None:
        n = x.shape[pos_axis]
        idx = jnp.where(positions < 0, positions + n, positions)
        sel = (jnp.arange(n)[:, None] == idx[None, :]).any(-1)
        mask = mask & sel.reshape((n,) + (1,) * (x.ndim - pos_axis - 1))
    if heads is not None:
        if head_axis is None:
            raise InterventionError(f"site {site!r} has no head axis; heads= is not valid there")
        n = x.shape[head_axis]
        sel = (jnp.arange(n)[:, None] == heads[None, :]).any(-1)
        mask = mask & sel.reshape((n,) + (1,) * (x.ndim - head_axis - 1))
    return mask


def _fit(value: Array, x: Array, site: str, what: str, heads=None) -> Array:
    """Check `value` against the activation `x` and return it broadcastable to `x`.

    The value must have x's shape or a suffix of it. With `heads=`, it may also omit the
    head axis (`[pos, d_head]` for `[batch, pos, n_heads, d_head]`): it then applies to
    each selected head.
    """
    vs, xs = tuple(value.shape), tuple(x.shape)

    def is_suffix(v, full):
        return len(v) <= len(full) and (not v or full[len(full) - len(v) :] == v)

    if is_suffix(vs, xs):
        return value
    head_axis = sites.axes(site)[1]
    if heads is not None and head_axis is not None:
        inner = len(xs) - head_axis - 1  # axes after the head axis
        if len(vs) >= inner and is_suffix(vs, xs[:head_axis] + xs[head_axis + 1 :]):
            return jnp.expand_dims(value, len(vs) - inner)
    raise InterventionError(
        f"{what} at site {site!r} has shape {vs}, but the activation there has shape {xs}; "
        "the value must have that shape or a suffix of it"
        + (" (with heads=, the head axis may be left out)" if head_axis is not None else "")
    )


def _select(x: Array, new: Array, site: str, positions, heads) -> Array:
    mask = _selection_mask(x, site, positions, heads)
    new = jnp.broadcast_to(new, x.shape).astype(x.dtype)
    return new if mask is None else jnp.where(mask, new, x)


class Intervention:
    """Base class: `apply(x, site) -> x'`. Subclasses are `flax.struct` dataclasses."""

    def apply(self, x: Array, site: str) -> Array:  # pragma: no cover - interface
        raise NotImplementedError


@struct.dataclass
class Patch(Intervention):
    """Replace the activation (at chosen positions/heads) by `value`."""

    value: Array
    positions: Array | None = None
    heads: Array | None = None

    def apply(self, x, site):
        value = _fit(self.value, x, site, "patch value", self.heads)
        return _select(x, value, site, self.positions, self.heads)


@struct.dataclass
class Add(Intervention):
    """Add `delta` (steering vector; a zero delta gives gradients at the site)."""

    delta: Array
    positions: Array | None = None
    heads: Array | None = None

    def apply(self, x, site):
        delta = _fit(self.delta, x, site, "delta", self.heads).astype(x.dtype)
        mask = _selection_mask(x, site, self.positions, self.heads)
        return x + (delta if mask is None else jnp.where(mask, delta, 0))


@struct.dataclass
class Scale(Intervention):
    """Multiply by `factor` (a gate or learned mask; broadcast like a value)."""

    factor: Array
    positions: Array | None = None
    heads: Array | None = None

    def apply(self, x, site):
        factor = _fit(self.factor, x, site, "scale factor", self.heads)
        return _select(x, x * factor, site, self.positions, self.heads)


@struct.dataclass
class MeanAblate(Intervention):
    """Replace by the mean over the batch axis of this very run (per position)."""

    positions: Array | None = None
    heads: Array | None = None

    def apply(self, x, site):
        return _select(x, jnp.mean(x, axis=0, keepdims=True), site, self.positions, self.heads)


@struct.dataclass
class Resample(Intervention):
    """Replace by the activation of another batch element, chosen by a PRNG key."""

    key: Array
    positions: Array | None = None
    heads: Array | None = None

    def apply(self, x, site):
        perm = jax.random.permutation(self.key, x.shape[0])
        return _select(x, x[perm], site, self.positions, self.heads)


@struct.dataclass
class Project(Intervention):
    """Project onto (`mode="onto"`) or out of (`mode="out"`) the span of `directions`.

    `directions` is `[k, d]` (or `[d]`) on the last axis of the activation; it is
    orthonormalised here, so any basis of the subspace gives the same result.
    With `mode="set"`, the coordinates along the (orthonormalised) directions are set to
    `coeffs` (`[k]`), keeping the orthogonal part.
    """

    directions: Array
    coeffs: Array | None = None
    positions: Array | None = None
    heads: Array | None = None
    mode: str = struct.field(pytree_node=False, default="out")

    def apply(self, x, site):
        basis = jnp.atleast_2d(self.directions).astype(x.dtype)
        if basis.shape[-1] != x.shape[-1]:
            raise InterventionError(
                f"directions at site {site!r} have dimension {basis.shape[-1]}, but the "
                f"activation's last axis is {x.shape[-1]} (shape {tuple(x.shape)})"
            )
        q, _ = jnp.linalg.qr(basis.T)  # [d, k], orthonormal columns
        coords = x @ q
        inside = coords @ q.T
        if self.mode == "out":
            new = x - inside
        elif self.mode == "onto":
            new = inside
        elif self.mode == "set":
            if self.coeffs is None:
                raise InterventionError("Project(mode='set') needs coeffs")
            new = x - inside + jnp.asarray(self.coeffs, x.dtype) @ q.T
        else:
            raise InterventionError(f"Project mode {self.mode!r}; valid: 'out', 'onto', 'set'")
        return _select(x, new, site, self.positions, self.heads)


@struct.dataclass
class Apply(Intervention):
    """Apply `fn(params, x) -> x'` (SAE splice, DAS rotation, any learned map).

    `fn` is static (a module-level function, hashable); `params` is a pytree of arrays
    and can be swept with `vmap` or trained with `grad`.
    """

    params: Any
    fn: Callable[[Any, Array], Array] = struct.field(pytree_node=False)
    positions: Array | None = None
    heads: Array | None = None

    def apply(self, x, site):
        new = self.fn(self.params, x)
        if tuple(new.shape) != tuple(x.shape):
            raise InterventionError(
                f"function {getattr(self.fn, '__name__', self.fn)!r} at site {site!r} returned "
                f"shape {tuple(new.shape)}, but the activation has shape {tuple(x.shape)}"
            )
        return _select(x, new, site, self.positions, self.heads)


# ----------------------------------------------------------------------------------------
# Constructors: the short user-facing names (`mj.patch`, `mj.add`, `mj.ablate`, ...).


def patch(value, positions=None, heads=None) -> Patch:
    """Replace the site's activation by `value` (optionally only at positions/heads)."""
    return Patch(jnp.asarray(value), _as_index(positions), _as_index(heads))


def add(delta, positions=None, heads=None) -> Add:
    """Add `delta` to the site's activation (steering; zeros for gradients)."""
    return Add(jnp.asarray(delta), _as_index(positions), _as_index(heads))


def scale(factor, positions=None, heads=None) -> Scale:
    """Multiply the site's activation by `factor`."""
    return Scale(jnp.asarray(factor), _as_index(positions), _as_index(heads))


def ablate(kind: str = "zero", value=None, *, key=None, positions=None, heads=None):
    """Ablate a site.

    Args:
      kind: "zero"; "mean" (with `value`: that mean, e.g. over a reference data set;
        without: the batch mean of this run); "resample" (with `value`: activations of
        other inputs; without: another batch element of this run, chosen by `key`).
    """
    pos, hd = _as_index(positions), _as_index(heads)
    if kind == "zero":
        return Patch(jnp.zeros(()), pos, hd)
    if kind == "mean":
        return MeanAblate(pos, hd) if value is None else Patch(jnp.asarray(value), pos, hd)
    if kind == "resample":
        if value is not None:
            return Patch(jnp.asarray(value), pos, hd)
        if key is None:
            raise InterventionError("ablate('resample') needs value= (source activations) or key=")
        return Resample(key, pos, hd)
    raise InterventionError(f"unknown ablation kind {kind!r}; valid: 'zero', 'mean', 'resample'")


def project(directions, mode: str = "out", *, coeffs=None, positions=None, heads=None) -> Project:
    """Remove (`out`), keep only (`onto`) or set (`set`) a direction or subspace."""
    if mode not in ("out", "onto", "set"):
        raise InterventionError(f"project mode {mode!r}; valid: 'out', 'onto', 'set'")
    c = None if coeffs is None else jnp.atleast_1d(jnp.asarray(coeffs))
    return Project(jnp.asarray(directions), c, _as_index(positions), _as_index(heads), mode)


def apply_fn(fn, params, positions=None, heads=None) -> Apply:
    """Apply a parametrised function `fn(params, x)` at the site."""
    return Apply(params, fn, _as_index(positions), _as_index(heads))


def normalize_hooks(hooks) -> dict[str, tuple[Intervention, ...]]:
    """`{site: intervention or sequence}` -> `{site: tuple of interventions}`."""
    if hooks is None:
        return {}
    if not isinstance(hooks, dict):
        raise InterventionError(
            f"hooks must be a dict mapping site names to interventions, got {type(hooks).__name__}"
        )
    out = {}
    for site, iv in hooks.items():
        ivs: Sequence = iv if isinstance(iv, (list, tuple)) else (iv,)
        for one in ivs:
            if not isinstance(one, Intervention):
                raise InterventionError(
                    f"hooks[{site!r}] holds {type(one).__name__}, not an intervention "
                    "(use mj.patch, mj.add, mj.ablate, mj.scale, mj.project, mj.apply_fn)"
                )
        out[site] = tuple(ivs)
    return out
