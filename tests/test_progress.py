"""Long work's helpers: dropping compiled programs before they exhaust the mapping limit."""

import jax
import jax.numpy as jnp
import pytest

from mechjax import progress

pytestmark = pytest.mark.skipif(progress.memory_maps() is None, reason="needs Linux /proc")


def _compile_many(n: int) -> list:
    fs = [jax.jit(lambda x, i=i: jnp.tanh(x) * i) for i in range(n)]
    for f in fs:
        f(jnp.ones(3)).block_until_ready()
    return fs


def test_release_compiled_frees_the_mappings_of_compiled_programs():
    base = progress.memory_maps()[0]
    fs = _compile_many(60)
    grown = progress.memory_maps()[0]
    assert grown > base + 60, (base, grown)  # each CPU program keeps mappings
    assert progress.release_compiled(fraction=0.0)
    assert all(f._cache_size() == 0 for f in fs)
    assert progress.memory_maps()[0] < grown - 60


def test_release_compiled_keeps_programs_below_the_fraction():
    fs = _compile_many(3)
    assert not progress.release_compiled(fraction=1.0)
    assert all(f._cache_size() == 1 for f in fs)
