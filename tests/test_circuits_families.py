"""Families without an edge graph are refused by name: BERT (post-LN encoder) and any
family without a row in `FAMILY_GRAPHS`. (The families with a graph are checked edge by
edge in tests/test_circuits_edges.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mechjax as mj
from mechjax import circuits, metrics
from mechjax.io.families import family_of_module
from mechjax.models import bert

B, P = 2, 4


@pytest.fixture(scope="module")
def pair():
    rng = np.random.RandomState(3)
    clean = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    corrupted = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    return clean, corrupted, metrics.Negate(metrics.LogitDiff(jnp.array([1, 2]), jnp.array([3, 4])))


# -------------------------------------------------------------------------- encoders


def test_post_ln_encoder_is_refused(pair):
    cfg = bert.Config(d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=48, d_vocab=50, n_ctx=64)
    model = mj.Model(
        bert.init(jax.random.PRNGKey(0), cfg, scale=0.3), cfg, family_of_module("bert")
    )
    clean, corrupted, metric = pair
    with pytest.raises(mj.InputError, match="'bert'.*post-LN"):
        circuits.graph_of(model)
    valid = np.ones((9, 27), bool)  # the shape a graph would have; refused before use
    calls = [
        lambda: circuits.evaluate_graph(model, clean, corrupted, metric, valid),
        lambda: circuits.exact_edge_scores(model, clean, corrupted, metric),
        lambda: circuits.eap(model, clean, corrupted, metric),
        lambda: circuits.eap_ig(model, clean, corrupted, metric),
    ]
    for call in calls:
        with pytest.raises(mj.InputError, match="'bert'"):
            call()


def test_family_table_refuses_unknown_families(tiny_llama, pair):
    """A family without a row (a new port) is refused by name, not run as if sequential."""
    model = mj.Model(
        tiny_llama.params, tiny_llama.config, tiny_llama.family._replace(name="newfamily")
    )
    with pytest.raises(
        mj.InputError, match="circuits: family 'newfamily' has no defined edge graph"
    ):
        circuits.graph_of(model)
    clean, corrupted, metric = pair
    with pytest.raises(mj.InputError, match="'newfamily'"):
        circuits.eap(model, clean, corrupted, metric)
    assert circuits.graph_of(tiny_llama).n_edges > 0  # the same weights under 'llama' run
