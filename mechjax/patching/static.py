"""Metrics split into array leaves and a hashable static part, so a compiled sweep
takes the metric's arrays as arguments and keys its cache on the rest."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class _Static:
    """A hashable holder for the non-array part of a metric (functions, structure)."""

    def __init__(self, treedef, leaves, mask):
        self.treedef, self.leaves, self.mask = treedef, tuple(leaves), tuple(mask)

    def _key(self):
        return (
            self.treedef,
            tuple(id(x) if not _hashable(x) else x for x in self.leaves),
            self.mask,
        )

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key() == other._key()


def _hashable(x) -> bool:
    try:
        hash(x)
        return True
    except TypeError:
        return False


def split_static(tree) -> tuple[list, _Static]:
    """(array leaves, hashable rest): pass the first to `jit`, the second as static."""
    leaves, treedef = jax.tree.flatten(tree)
    mask = [
        isinstance(x, (jax.Array, np.ndarray, np.generic, float, int)) and not isinstance(x, bool)
        for x in leaves
    ]
    arrays = [jnp.asarray(x) for x, m in zip(leaves, mask) if m]
    return arrays, _Static(treedef, [None if m else x for x, m in zip(leaves, mask)], mask)


def join_static(arrays, static: _Static):
    it = iter(arrays)
    leaves = [next(it) if m else x for x, m in zip(static.leaves, static.mask)]
    return jax.tree.unflatten(static.treedef, leaves)
