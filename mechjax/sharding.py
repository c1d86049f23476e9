"""Sharding: meshes, logical axis names for every parameter, sharded experiments.

What this module owns:

- `make_mesh(data=, model=, sweep=)`: a `jax.sharding.Mesh` with the named axes `data`
  (batch), `sweep` (vmapped intervention values) and `model` (tensor parallelism).
- Logical axis names for every parameter leaf of every family, derived from the leaf's
  TransformerLens name and rank (`W_Q -> ("heads", "embed", "head_dim")`, ...), and
  mapped to mesh axes with Flax's logical-partitioning rules
  (`flax.linen.logical_to_mesh_axes`). `DEFAULT_RULES` puts heads, kv heads, MLP width
  and vocabulary on `model`, the batch on `data` and sweeps on `sweep`.
- `shard_model`, `shard_batch`, `shard_sweep`: place a model, inputs, swept values.
  A mesh axis that does not divide the dimension it shards is refused before anything is
  placed, with an error naming the parameter, the dimension and the mesh axis.
- Sharded experiments: `patching_sweep` (activation patching vmapped over patch values,
  the values' leading axis on `sweep`), `attribution` (gradients with respect to zero
  deltas, vmapped over prompt sets on `sweep`), and `sharded_train_step` (data parallel,
  optimizer state sharded like the params and, ZeRO-1 style, over `data` as well).

Nothing here changes what a forward computes: the mesh axes are `Auto` (GSPMD), so the
same pure `mj.run` runs on one device or many and XLA inserts the collectives. Tests
check every sharded result against the single-device one to 1e-5 (float32).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import spmd
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from mechjax.errors import MechjaxError
from mechjax.interventions import add, patch
from mechjax.model import Model, run

Array = jax.Array
Rules = Sequence[tuple[str, "str | tuple[str, ...] | None"]]

MESH_AXES = ("data", "sweep", "model")

DEFAULT_RULES: tuple = (
    ("batch", "data"),
    ("sweep", "sweep"),
    ("heads", "model"),
    ("kv_heads", "model"),
    ("mlp", "model"),
    ("vocab", "model"),
)

# Logical axes of each parameter, by its TransformerLens name. Norm weights and biases
# (`ln1.w`, `ln_final.b`, ...) are looked up by their parent's name below.
PARAM_AXES: dict[str, tuple[str, ...]] = {
    "W_E": ("vocab", "embed"),
    "W_pos": ("ctx", "embed"),
    "W_U": ("embed", "vocab"),
    "b_U": ("vocab",),
    "W_Q": ("heads", "embed", "head_dim"),
    "W_K": ("kv_heads", "embed", "head_dim"),
    "W_V": ("kv_heads", "embed", "head_dim"),
    "W_O": ("heads", "head_dim", "embed"),
    "b_Q": ("heads", "head_dim"),
    "b_K": ("kv_heads", "head_dim"),
    "b_V": ("kv_heads", "head_dim"),
    "b_O": ("embed",),
    "W_in": ("embed", "mlp"),
    "W_gate": ("embed", "mlp"),
    "b_in": ("mlp",),
    "b_gate": ("mlp",),
    "W_out": ("mlp", "embed"),
    "b_out": ("embed",),
    "W_router": ("embed", "experts"),  # mixture of experts (models/mixtral.py)
    "b_router": ("experts",),
}
NORM_AXES = ("embed",)
# A mixture of experts stacks its experts' W_gate/W_in/W_out (and biases) under an
# `experts` key; their leading axis is the logical axis "experts" (replicated by
# DEFAULT_RULES: each expert is tensor-parallel on `model` through its `mlp` axis; map
# "experts" to a mesh axis, and "mlp" to None, for expert parallelism).
EXPERTS_KEY = "experts"


class ShardingError(MechjaxError, ValueError):
    """A mesh or rule set that cannot place a parameter or an input."""


# ------------------------------------------------------------------------------ meshes


def _mesh_axes(axes: Sequence, rules) -> PartitionSpec:
    """Flax's logical -> mesh axis mapping, as a PartitionSpec (never None for a tuple)."""
    spec = spmd.logical_to_mesh_axes(tuple(axes), rules)
    return spec if spec is not None else PartitionSpec()


def make_mesh(data: int | None = None, model: int = 1, sweep: int = 1, *, devices=None) -> Mesh:
    """A mesh with axes `("data", "sweep", "model")` over `devices` (default: all).

    `data=None` takes every device that `model * sweep` leaves. `model` is the innermost
    axis, so tensor-parallel collectives stay between neighbouring devices (same host,
    fastest links) on TPU slices and GPU hosts.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data is None:
        if n % (model * sweep):
            raise ShardingError(
                f"model={model} x sweep={sweep} does not divide the {n} devices available"
            )
        data = n // (model * sweep)
    if data * sweep * model != n:
        raise ShardingError(
            f"mesh data={data} x sweep={sweep} x model={model} = {data * sweep * model} "
            f"devices, but {n} are given; pass devices= or sizes whose product is {n}"
        )
    return jax.make_mesh(
        (data, sweep, model), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices
    )


def replicate(rules: Rules, *names: str) -> tuple:
    """`rules` with the logical axes `names` replicated (mapped to no mesh axis).

    E.g. `replicate(DEFAULT_RULES, "kv_heads")` for a model with one kv head.
    """
    return tuple((n, None) for n in names) + tuple(r for r in rules if r[0] not in names)


def _rules_for(axis_sizes: Mapping[str, int], rules: Rules) -> tuple:
    """Drop mesh axes the mesh does not have, so a `("data", "model")` mesh also works."""

    def keep(target):
        if target is None:
            return None
        names = (target,) if isinstance(target, str) else tuple(target)
        names = tuple(a for a in names if a in axis_sizes)
        return None if not names else names[0] if len(names) == 1 else names

    return tuple((name, keep(target)) for name, target in rules)


# ------------------------------------------------------------------- logical axis names


def _path_str(path) -> str:
    out = ""
    for k in path:
        if isinstance(k, jax.tree_util.SequenceKey):
            out += f"[{k.idx}]"
        else:
            name = getattr(k, "key", getattr(k, "name", k))
            out += f".{name}" if out else str(name)
    return out


def _names(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]


def leaf_axes(path: str | Sequence[str], ndim: int) -> tuple[str | None, ...]:
    """Logical axis names of a parameter from its TransformerLens path and rank.

    Extra leading axes (a `lax.scan` layer stack, a stack of checkpoints) are unnamed,
    i.e. replicated; a leaf whose name is unknown is replicated whole.
    """
    parts = (
        path.replace("[", ".").replace("]", "").split(".") if isinstance(path, str) else list(path)
    )
    name, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
    axes = PARAM_AXES.get(name)
    if axes is None and name in ("w", "b") and parent.startswith("ln"):
        axes = NORM_AXES
    if axes is not None and parent == EXPERTS_KEY:
        axes = ("experts",) + axes
    if axes is None or len(axes) > ndim:
        return (None,) * ndim
    return (None,) * (ndim - len(axes)) + axes


def logical_axes(params) -> Any:
    """A pytree like `params` holding each leaf's logical `PartitionSpec`."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: PartitionSpec(*leaf_axes(_names(p), np.ndim(x))), params
    )


def mesh_specs(params, rules: Rules = DEFAULT_RULES, axis_sizes: Mapping[str, int] | None = None):
    """Each leaf's mesh `PartitionSpec` under `rules` (Flax's logical-to-mesh mapping).

    Args:
      params: a params pytree, or its `jax.eval_shape` (only shapes are read).
      rules: `(logical axis, mesh axis or None)` pairs, in order of precedence.
      axis_sizes: mesh axis name -> size (`dict(mesh.shape)`); rules naming an absent
        axis are dropped, and every sharded dimension is checked for divisibility.
    """
    if axis_sizes is not None:
        rules = _rules_for(axis_sizes, rules)
    specs = jax.tree.map(
        lambda s: _mesh_axes(tuple(s), rules),
        logical_axes(params),
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )
    if axis_sizes is not None:
        _check_divisible(params, specs, axis_sizes)
    return specs


def _axis_size(entry, axis_sizes) -> int:
    if entry is None:
        return 1
    names = (entry,) if isinstance(entry, str) else entry
    return math.prod(axis_sizes[a] for a in names)


def _check_divisible(params, specs, axis_sizes, what: str = "parameter") -> None:
    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_s = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    problems: dict[tuple, list[str]] = {}
    for (path, x), spec in zip(flat_p, flat_s):
        logical = leaf_axes(_names(path), np.ndim(x))
        for dim, (size, entry) in enumerate(zip(np.shape(x), tuple(spec))):
            n = _axis_size(entry, axis_sizes)
            if size % n:
                key = (dim, logical[dim], size, entry, n)
                problems.setdefault(key, []).append(_path_str(path))
    if not problems:
        return
    lines = []
    for (dim, lname, size, entry, n), paths in problems.items():
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        lines.append(
            f"{what} {shown}: dimension {dim} ({lname!r}) has size {size}, "
            f"not divisible by mesh axis {entry!r} of size {n}"
        )
    names = sorted({k[1] for k in problems if k[1]})
    hint = (
        f"; pick a mesh axis size that divides it, or keep it whole with "
        f"rules=replicate(rules, {', '.join(repr(n) for n in names)})"
        if names
        else ""
    )
    raise ShardingError("cannot shard: " + "; ".join(lines) + hint)


def param_shardings(params, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """Each leaf's `NamedSharding` (checked for divisibility), via Flax's rule mapping."""
    rules = _rules_for(dict(mesh.shape), rules)
    mesh_specs(params, rules, dict(mesh.shape))  # raises before anything is placed
    return spmd.logical_to_mesh_sharding(logical_axes(params), mesh, rules)


# ------------------------------------------------------------------------- placement


def _place(x, sharding: NamedSharding) -> Array:
    """Put `x` under `sharding`; across processes every process must hold the same `x`.

    An array already spread over several devices is resharded on device; anything else
    (numpy, or a freshly loaded array on one device) is sliced on the host, which needs
    no compiled resharding program per shape.
    """
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    if sharding.is_fully_addressable:
        return jax.device_put(host, sharding)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def shard_model(model: Model, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Model:
    """The model with its params placed on `mesh` under `rules`.

    Raises `ShardingError` naming the parameter, the dimension, its size and the mesh
    axis if a mesh axis does not divide the dimension it shards.
    """
    shardings = param_shardings(model.params, mesh, rules)
    return dataclasses.replace(model, params=jax.tree.map(_place, model.params, shardings))


def shard_batch(x, mesh: Mesh, rules: Rules = DEFAULT_RULES, axes: Sequence[str] = ("batch",)):
    """Place every array of `x` with its leading axes named `axes` (rest replicated).

    `axes=("sweep", "batch")` places `[n_sweep, batch, pos]` token sets.
    """
    rules = _rules_for(dict(mesh.shape), rules)

    def one(path, a):
        spec = _mesh_axes(tuple(axes) + (None,) * (np.ndim(a) - len(axes)), rules)
        for dim, entry in enumerate(tuple(spec)):
            n = _axis_size(entry, dict(mesh.shape))
            if np.shape(a)[dim] % n:
                raise ShardingError(
                    f"input {_path_str(path) or 'array'}: dimension {dim} ({axes[dim]!r}) has "
                    f"size {np.shape(a)[dim]}, not divisible by mesh axis {entry!r} of size {n}"
                )
        return _place(a, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(one, x)


def shard_sweep(values, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """Place swept values (any pytree, e.g. an intervention) with the leading axis on `sweep`."""
    return shard_batch(values, mesh, rules, axes=("sweep",))


def to_host(tree) -> Any:
    """Numpy copies of a pytree of arrays, gathered from every process if need be."""
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def _constrain(tree, mesh: Mesh | None, rules: Rules, axes: Sequence[str]):
    if mesh is None:
        return tree
    rules = _rules_for(dict(mesh.shape), rules)

    def one(a):
        spec = _mesh_axes(tuple(axes) + (None,) * (a.ndim - len(axes)), rules)
        return jax.lax.with_sharding_constraint(a, NamedSharding(mesh, spec))

    return jax.tree.map(one, tree)


# ---------------------------------------------------------------- sharded experiments


Metric = Callable[[Array], Array]


def patching_sweep(
    site: str,
    metric: Metric,
    *,
    positions=None,
    heads=None,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Callable:
    """Activation patching over many values as one program.

    Returns `sweep(model, tokens, values) -> metric per value`: for each `values[i]`, the
    run with `site` patched to it (at `positions`/`heads`), scored by `metric(logits)`.
    With `mesh`, the values' leading axis and the result are kept on the `sweep` axis;
    shard the model with `shard_model` and the values with `shard_sweep`.
    """
    positions = None if positions is None else tuple(np.atleast_1d(positions).tolist())
    heads = None if heads is None else tuple(np.atleast_1d(heads).tolist())

    def one(model, tokens, value):
        return metric(run(model, tokens, {site: patch(value, positions, heads)}).logits)

    def sweep(model, tokens, values):
        values = _constrain(values, mesh, rules, ("sweep",))
        out = jax.vmap(one, in_axes=(None, None, 0))(model, tokens, values)
        return _constrain(out, mesh, rules, ("sweep",))

    return jax.jit(sweep)


class Attribution(NamedTuple):
    """Metric, its gradient at each site (w.r.t. a zero delta), and the site activations."""

    metric: Array
    grads: dict[str, Array]
    acts: dict[str, Array]


def attribution(
    sites: Sequence[str], metric: Metric, *, mesh: Mesh | None = None, rules: Rules = DEFAULT_RULES
) -> Callable:
    """Attribution pass (Nanda 2023; Syed et al. 2023) vmapped over prompt sets.

    Returns `attr(model, tokens) -> Attribution` for `tokens [n_sweep, batch, pos]`:
    for each prompt set, `metric(logits)`, its gradient with respect to a zero `mj.add`
    delta at every site in `sites` (the gradient at the activation), and the activations.
    Attribution-patching scores are `(corrupt_act - clean_act) * grad` summed over
    `d_model`. With `mesh`, the leading axis is on `sweep` and the batch on `data`.
    """
    sites = tuple(sites)

    def one(model, tokens):
        shapes = jax.eval_shape(lambda: run(model, tokens, capture=sites).cache)
        zeros = {s: jnp.zeros(shapes[s].shape, shapes[s].dtype) for s in sites}

        def scored(deltas):
            out = run(model, tokens, {s: add(d) for s, d in deltas.items()}, capture=sites)
            return metric(out.logits), out.cache

        (m, acts), grads = jax.value_and_grad(scored, has_aux=True)(zeros)
        return Attribution(m, grads, acts)

    def attr(model, tokens):
        tokens = _constrain(tokens, mesh, rules, ("sweep", "batch"))
        out = jax.vmap(one, in_axes=(None, 0))(model, tokens)
        return _constrain(out, mesh, rules, ("sweep",))

    return jax.jit(attr)


# ---------------------------------------------------------------------------- training


def _data_axis(rules: Rules) -> str | None:
    for name, target in rules:
        if name == "batch" and isinstance(target, str):
            return target
    return None


def state_specs(
    state,
    rules: Rules = DEFAULT_RULES,
    axis_sizes: Mapping[str, int] | None = None,
    *,
    zero: bool = True,
):
    """Mesh `PartitionSpec`s of a `training.TrainState` (a pytree with a `params` field).

    Params follow `rules`. An optimizer-state leaf that mirrors a parameter (same path
    suffix and shape, e.g. Adam's `mu` and `nu`) is sharded like that parameter and, with
    `zero=True` (ZeRO-1, Rajbhandari et al. 2020), also over the data axis on its first
    free dimension the data axis divides. Every other leaf (step counts, PRNG keys) is
    replicated. Works on `jax.eval_shape` output, so memory can be planned without devices.
    """
    sizes = dict(axis_sizes or {})
    rules = _rules_for(sizes, rules) if axis_sizes is not None else tuple(rules)
    params = state.params
    specs = mesh_specs(params, rules, axis_sizes)
    by_path = {}
    for (path, x), spec in zip(
        jax.tree_util.tree_flatten_with_path(params)[0],
        jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, PartitionSpec)),
    ):
        by_path[tuple(_names(path))] = (np.shape(x), spec)
    data = _data_axis(rules) if zero else None

    def spec_of(path, x):
        names = tuple(_names(path))
        for k in range(len(names)):
            hit = by_path.get(names[k:])
            if hit is not None and hit[0] == np.shape(x):
                spec = tuple(hit[1]) + (None,) * (np.ndim(x) - len(tuple(hit[1])))
                if names[0] != "params" and data and sizes.get(data, 1) > 1:
                    spec = _add_axis(spec, np.shape(x), data, sizes)
                return PartitionSpec(*spec)
        return PartitionSpec()

    return jax.tree_util.tree_map_with_path(spec_of, state)


def state_shardings(state, mesh: Mesh, rules: Rules = DEFAULT_RULES, *, zero: bool = True):
    """`state_specs` as `NamedSharding`s on `mesh`."""
    specs = state_specs(state, rules, dict(mesh.shape), zero=zero)
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )


def _add_axis(spec: tuple, shape: tuple, axis: str, sizes: Mapping[str, int]) -> tuple:
    used = {a for e in spec if e is not None for a in ((e,) if isinstance(e, str) else e)}
    if axis in used:
        return spec
    for dim, (entry, size) in enumerate(zip(spec, shape)):
        if entry is None and size % sizes[axis] == 0:
            return spec[:dim] + (axis,) + spec[dim + 1 :]
    return spec


def shard_state(state, mesh: Mesh, rules: Rules = DEFAULT_RULES, *, zero: bool = True):
    """Place a `TrainState` under `state_shardings`."""
    return jax.tree.map(_place, state, state_shardings(state, mesh, rules, zero=zero))


def sharded_train_step(
    loss_fn, optimizer, state, mesh: Mesh, rules: Rules = DEFAULT_RULES, *, zero: bool = True
) -> Callable:
    """`mechjax.training`'s step, compiled to keep `state` sharded as `state_shardings`.

    Data parallel: place each batch with `shard_batch` (batch on `data`); XLA reduces
    the gradients across `data`. Returns `step(state, batch) -> (state, metrics)`.
    """
    from mechjax.training import make_train_step

    shardings = state_shardings(state, mesh, rules, zero=zero)
    step = make_train_step(loss_fn, optimizer, jit=False)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(step, out_shardings=(shardings, replicated))


def per_device_bytes(params, specs, axis_sizes: Mapping[str, int]) -> int:
    """Bytes one device holds of `params` (arrays or `jax.eval_shape` output) under `specs`."""
    total = 0
    flat_s = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    for x, spec in zip(jax.tree.leaves(params), flat_s):
        shape = list(np.shape(x))
        for dim, entry in enumerate(tuple(spec)):
            shape[dim] //= _axis_size(entry, axis_sizes)
        total += math.prod(shape) * np.dtype(x.dtype).itemsize
    return total
