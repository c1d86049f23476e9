"""Interventions: small frozen pytrees applied at a site.

An intervention holds its *structure* as static fields (what it does, its mode) and its
*values* as array leaves (patch values, deltas, directions, positions, heads, parameters
of a function). Because values are leaves, `jax.vmap` sweeps over them and `jax.grad`
differentiates them; because nothing is closed over, a sweep never recompiles.

Positions and heads are integer array leaves too, so a sweep over positions or heads is
a `vmap` over an index array. Each is one index or a 1-D array of indices. Negative
positions count from the end, so valid positions are `[-n, n)` for a `pos` axis of size
`n`; valid heads are `[0, n_heads)` of that site's head axis (`hook_k`, `hook_v` and the
other key/value sites have `n_kv_heads` there). A site without a head axis refuses
`heads=`.

An index outside its range never leaves the activation silently unchanged:

- concrete indices (Python ints, lists, numpy arrays, and jax arrays that are not
  tracers when the intervention is applied, eagerly or inside a trace) raise
  `InterventionError` naming the site, the axis, the index and the valid range. The
  constructors keep concrete indices as numpy arrays, so an intervention built inside a
  jitted function from Python ints is still checked while it is traced.
- traced indices (a `vmap` sweep over positions, or interventions passed as arguments
  of a jitted function, as in `jax.jit(mj.run)(model, tokens, hooks)`) have no value at
  trace time. Then the whole activation at that site becomes NaN (for that element of a
  sweep only), so every number computed from it is NaN, never a plausible wrong one,
  as with out-of-vocabulary tokens under jit.

Shapes: a value (patch value, delta, ...) must have the activation's shape or a suffix of
it (`[pos, d_model]` or `[d_model]` for a `[batch, pos, d_model]` site): it is
broadcast over the leading axes. Anything else raises `InterventionError` naming the
site and both shapes.

Mean ablation without a reference averages over the batch axis of the run itself, and
resampling without `value=` draws another element of it; over a batch of one both would
be the identity, so they raise and ask for a `reference=` batch (or an already-averaged
`value=`) or for source activations (`value=`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mechjax import sites
from mechjax.errors import InterventionError
from mechjax.typing import is_tracer

Array = jax.Array
# positions/heads: numpy while concrete (checked against the site), jax arrays when swept
Index = Array | np.ndarray


def _as_index(x, what: str = "positions/heads") -> Array | np.ndarray | None:
    """One index or a 1-D array of indices as a 1-D int32 array (None stays None).

    Concrete indices become numpy arrays: they stay concrete inside a trace, so their
    range can be checked against the site's shape there.
    """
    if x is None:
        return None
    traced = is_tracer(x)
    arr = x if traced else np.asarray(x)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InterventionError(f"{what} must be integers, got dtype {arr.dtype}")
    if arr.ndim > 1:
        # a 2-D array could mean a set per batch row or a sweep: neither is what the
        # mask does, so say what is accepted instead of guessing
        raise InterventionError(
            f"{what} must be one index or a 1-D array of indices, got shape "
            f"{tuple(arr.shape)}; to sweep over several index sets, vmap over the first axis"
        )
    if traced:
        return jnp.atleast_1d(arr).astype(jnp.int32)
    return np.atleast_1d(arr).astype(np.int32)


_KV_HOOKS = ("hook_k", "hook_v", "hook_rot_k", "hook_k_input", "hook_v_input", "hook_k_normed")


def check_index_range(idx, n: int, site: str, what: str, axis: str) -> Array | None:
    """Raise for concrete indices outside their range; a traced flag for traced ones.

    The one range check of positions ([-n, n)) and heads ([0, n)): interventions call
    it while tracing, `mj.run` on the host after a compiled call.
    """
    lo = -n if axis == "pos" else 0
    if is_tracer(idx):
        return jnp.any((idx < lo) | (idx >= n))
    host = np.asarray(idx)
    bad = host[(host < lo) | (host >= n)]
    if bad.size:
        if axis == "pos":
            note = " (negative positions count from the end)"
        elif sites.parse(site).hook in _KV_HOOKS:
            note = " (this site's head axis counts key/value heads)"
        else:
            note = ""
        raise InterventionError(
            f"{what} index {int(bad[0])} is out of range at site {site!r}: its {axis!r} "
            f"axis has size {n}, so valid {what} are [{lo}, {n}){note}"
        )
    return None


def _selection(x: Array, site: str, positions, heads) -> tuple[Array | None, Array | None]:
    """(mask broadcastable to `x` selecting the positions and heads, or None;
    traced flag "some index is out of range", or None when there is nothing to flag)."""
    if positions is None and heads is None:
        return None, None
    pos_axis, head_axis = sites.axes(site)
    mask, flags = jnp.ones((), bool), []
    if positions is not None:
        pos = _as_index(positions, "positions")
        assert pos is not None
        n = x.shape[pos_axis]
        flags.append(check_index_range(pos, n, site, "positions", "pos"))
        idx = jnp.where(pos < 0, pos + n, pos)
        sel = (jnp.arange(n)[:, None] == idx[None, :]).any(-1)
        mask = mask & sel.reshape((n,) + (1,) * (x.ndim - pos_axis - 1))
    if heads is not None:
        if head_axis is None:
            raise InterventionError(f"site {site!r} has no head axis; heads= is not valid there")
        hd = _as_index(heads, "heads")
        assert hd is not None
        n = x.shape[head_axis]
        flags.append(check_index_range(hd, n, site, "heads", "head"))
        sel = (jnp.arange(n)[:, None] == hd[None, :]).any(-1)
        mask = mask & sel.reshape((n,) + (1,) * (x.ndim - head_axis - 1))
    flags = [f for f in flags if f is not None]
    return mask, (jnp.any(jnp.stack(flags)) if flags else None)


def _poison(out: Array, bad: Array | None) -> Array:
    """NaN everywhere when a traced index was out of range: loud, never a wrong number."""
    return out if bad is None else jnp.where(bad, jnp.asarray(jnp.nan, out.dtype), out)


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
    mask, bad = _selection(x, site, positions, heads)
    new = jnp.broadcast_to(new, x.shape).astype(x.dtype)
    return _poison(new if mask is None else jnp.where(mask, new, x), bad)


class Intervention:
    """Base class: `apply(x, site) -> x'`. Subclasses are `flax.struct` dataclasses."""

    def apply(self, x: Array, site: str) -> Array:  # pragma: no cover - interface
        raise NotImplementedError


@struct.dataclass
class Patch(Intervention):
    """Replace the activation (at chosen positions/heads) by `value`."""

    value: Array
    positions: Index | None = None
    heads: Index | None = None

    def apply(self, x, site):
        value = _fit(self.value, x, site, "patch value", self.heads)
        return _select(x, value, site, self.positions, self.heads)


@struct.dataclass
class Add(Intervention):
    """Add `delta` (steering vector; a zero delta gives gradients at the site)."""

    delta: Array
    positions: Index | None = None
    heads: Index | None = None

    def apply(self, x, site):
        delta = _fit(self.delta, x, site, "delta", self.heads).astype(x.dtype)
        mask, bad = _selection(x, site, self.positions, self.heads)
        return _poison(x + (delta if mask is None else jnp.where(mask, delta, 0)), bad)


@struct.dataclass
class Scale(Intervention):
    """Multiply by `factor` (a gate or learned mask; broadcast like a value)."""

    factor: Array
    positions: Index | None = None
    heads: Index | None = None

    def apply(self, x, site):
        factor = _fit(self.factor, x, site, "scale factor", self.heads)
        return _select(x, x * factor, site, self.positions, self.heads)


@struct.dataclass
class MeanAblate(Intervention):
    """Replace by a batch mean (per position): of `reference`, or else of this very run.

    `reference` holds activations of a reference batch at this site,
    `[batch_ref, *activation.shape[1:]]`; its mean over the first axis replaces the
    activation. Without it the run's own batch is averaged, which needs a batch of more
    than one: the mean of one example is that example, so the ablation would do nothing.
    """

    positions: Index | None = None
    heads: Index | None = None
    reference: Array | None = None

    def apply(self, x, site):
        return _select(x, self._mean(x, site), site, self.positions, self.heads)

    def _mean(self, x, site):
        if self.reference is None:
            if x.shape[0] == 1:
                raise InterventionError(
                    f"mean ablation at site {site!r} over a batch of one changes nothing: "
                    "without a reference it averages over this run's batch axis, and the "
                    "mean of one example is that example. Pass activations of a reference "
                    "batch at this site, mj.ablate('mean', reference=acts) with acts of "
                    f"shape [batch_ref, {', '.join(map(str, x.shape[1:]))}], or an "
                    "already-averaged mean, mj.ablate('mean', value=mean)"
                )
            return jnp.mean(x, axis=0, keepdims=True)
        ref = self.reference
        if ref.ndim != x.ndim or tuple(ref.shape[1:]) != tuple(x.shape[1:]):
            raise InterventionError(
                f"mean-ablation reference at site {site!r} has shape {tuple(ref.shape)}, but "
                f"the activation there has shape {tuple(x.shape)}; the reference must be "
                f"[batch_ref, {', '.join(map(str, x.shape[1:]))}] (its mean is taken over "
                "the first axis); pass an already-averaged mean as value= instead"
            )
        return jnp.mean(ref, axis=0, keepdims=True)


@struct.dataclass
class Resample(Intervention):
    """Replace by the activation of another batch element, chosen by a PRNG key."""

    key: Array
    positions: Index | None = None
    heads: Index | None = None

    def apply(self, x, site):
        if x.shape[0] == 1:
            raise InterventionError(
                f"resample ablation at site {site!r} over a batch of one changes nothing: it "
                "takes another batch element of this run, and there is none. Pass "
                "activations of other inputs at this site: mj.ablate('resample', value=acts)"
            )
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
    positions: Index | None = None
    heads: Index | None = None
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
    positions: Index | None = None
    heads: Index | None = None

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


def _indices(positions, heads) -> tuple:
    return _as_index(positions, "positions"), _as_index(heads, "heads")


def patch(value, positions=None, heads=None) -> Patch:
    """Replace the site's activation by `value` (optionally only at positions/heads)."""
    return Patch(jnp.asarray(value), *_indices(positions, heads))


def add(delta, positions=None, heads=None) -> Add:
    """Add `delta` to the site's activation (steering; zeros for gradients)."""
    return Add(jnp.asarray(delta), *_indices(positions, heads))


def scale(factor, positions=None, heads=None) -> Scale:
    """Multiply the site's activation by `factor`."""
    return Scale(jnp.asarray(factor), *_indices(positions, heads))


def ablate(kind: str = "zero", value=None, *, key=None, reference=None, positions=None, heads=None):
    """Ablate a site.

    Args:
      kind: "zero"; "mean" (with `value`: that mean, already averaged, e.g. over a
        reference data set; with `reference`: activations of a reference batch at the
        site, `[batch_ref, ...]`, averaged over its first axis; with neither: the batch
        mean of this run, which needs a batch of more than one); "resample" (with
        `value`: activations of other inputs; without: another batch element of this
        run, chosen by `key`).
    """
    pos, hd = _indices(positions, heads)
    if reference is not None and (kind != "mean" or value is not None):
        raise InterventionError(
            "reference= is for ablate('mean') only, and replaces value= (an already-averaged "
            "mean): pass one of them"
        )
    if kind == "zero":
        return Patch(jnp.zeros(()), pos, hd)
    if kind == "mean":
        if value is not None:
            return Patch(jnp.asarray(value), pos, hd)
        return MeanAblate(pos, hd, None if reference is None else jnp.asarray(reference))
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
    pos, hd = _indices(positions, heads)
    return Project(jnp.asarray(directions), c, pos, hd, mode)


def apply_fn(fn, params, positions=None, heads=None) -> Apply:
    """Apply a parametrised function `fn(params, x)` at the site."""
    pos, hd = _indices(positions, heads)
    return Apply(params, fn, pos, hd)


def normalize_hooks(hooks) -> dict[Any, tuple[Intervention, ...]]:
    """`{site: intervention or sequence}` -> `{site: tuple of interventions}`.

    Sites are names or TransformerLens tuples (`("pattern", 3)`), resolved by `mj.run`.
    """
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
