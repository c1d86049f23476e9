"""Circuit graphs and evaluation on families that are not sequential pre-norm decoders.

- parallel-residual GPT-NeoX: no edge from a layer's heads to its own MLP;
- Gemma 3: head results pass through the post-attention norm before joining the stream;
- BERT (post-LN encoder): refused.

Every reference is a hand patch with `mj.run`, not the circuit code.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import jrun

import mechjax as mj
from mechjax import circuits, metrics
from mechjax.io.families import family_of_module
from mechjax.models import bert, gemma3, neox

B, P = 2, 4
RESULT0 = "blocks.0.attn.hook_result"


@pytest.fixture(scope="module")
def pair():
    rng = np.random.RandomState(3)
    clean = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    corrupted = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    return clean, corrupted, metrics.Negate(metrics.LogitDiff(jnp.array([1, 2]), jnp.array([3, 4])))


def _neox(parallel=True):
    cfg = neox.Config(
        d_model=32,
        n_layers=2,
        n_heads=4,
        d_head=8,
        d_mlp=48,
        d_vocab=50,
        n_ctx=64,
        rotary_dim=4,
        parallel_residual=parallel,
    )
    return mj.Model(neox.init(jax.random.PRNGKey(2), cfg, scale=0.3), cfg, family_of_module("neox"))


@pytest.fixture(scope="module")
def tiny_neox():
    return _neox()


@pytest.fixture(scope="module")
def tiny_gemma3():
    cfg = gemma3.Config(
        d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=48, d_vocab=50, n_ctx=64
    )
    p = gemma3.init(jax.random.PRNGKey(3), cfg, scale=0.3)
    p["blocks"][0]["ln1_post"]["w"] = p["blocks"][0]["ln1_post"]["w"] + 0.5  # gain far from 1
    return mj.Model(p, cfg, family_of_module("gemma3"))


def _metric(model, tokens, metric, hooks=None):
    return float(metric(jrun(model, tokens, hooks).logits))


# ------------------------------------------------------------------ parallel residual


def test_parallel_graph_has_no_same_layer_head_to_mlp_edges(tiny_neox):
    g = circuits.graph_of(tiny_neox)
    # EAP-IG's parallel graph: 1 + 8 + 2 sources; 110 sequential edges minus 2 * 4
    assert g.n_edges == 102
    for l in range(2):
        for h in range(4):
            assert not g.valid[g.src.index(f"a{l}.h{h}"), g.dst.index(f"m{l}")]
    # the MLP reads what the attention reads: same upstream set as its heads' inputs
    for l in range(2):
        np.testing.assert_array_equal(
            g.valid[:, g.dst.index(f"m{l}")], g.valid[:, g.dst.index(f"a{l}.h0<q>")]
        )
    assert g.valid[g.src.index("a0.h0"), g.dst.index("m1")]
    assert g.valid[g.src.index("m0"), g.dst.index("a1.h0<q>")]
    # control: the sequential NeoX keeps the same-layer edges
    assert circuits.graph_of(_neox(parallel=False)).n_edges == 110


def test_parallel_full_empty_and_one_missing_edge(tiny_neox, pair):
    model = tiny_neox
    clean, corrupted, metric = pair
    g = circuits.graph_of(model)
    src, m1 = g.src.index("a0.h0"), g.dst.index("m1")
    phantom = np.ones_like(g.valid)
    phantom[src, g.dst.index("m0")] = False  # not an edge: must change nothing
    missing = g.valid.copy()
    missing[src, m1] = False
    masks = np.stack([g.valid, np.zeros_like(g.valid), phantom, missing])
    full, empty, ph, miss = np.asarray(
        circuits.evaluate_graph(model, clean, corrupted, metric, masks)
    )
    base = _metric(model, clean, metric)
    np.testing.assert_allclose(full, base, atol=1e-5)
    np.testing.assert_allclose(ph, base, atol=1e-5)
    np.testing.assert_allclose(empty, _metric(model, corrupted, metric), atol=1e-5)
    # edge a0.h0 -> m1 by hand: layer 1's MLP input gets head 0's corrupted - clean result
    r = [jrun(model, t, capture=[RESULT0]).cache[RESULT0][:, :, 0] for t in (clean, corrupted)]
    hand = _metric(model, clean, metric, {"blocks.1.hook_mlp_in": mj.add(r[1] - r[0])})
    assert abs(hand - base) > 1e-3  # the edge matters, so the check below can fail
    np.testing.assert_allclose(miss, hand, atol=1e-5)
    exact, g2 = circuits.exact_edge_scores(model, clean, corrupted, metric)
    assert g2.n_edges == 102 and bool(jnp.isfinite(exact).all())
    assert np.all(np.asarray(exact)[~g2.valid] == 0)
    np.testing.assert_allclose(exact[src, m1], hand - base, atol=1e-5)


# ------------------------------------------------------------ post-attention norm


def _head_out_edges_off(model, head="a0.h0"):
    g = circuits.graph_of(model)
    circ = g.valid.copy()
    circ[g.src.index(head)] = False
    return circ


def _patch_head0(model, clean, corrupted):
    """Clean run's layer-0 results with head 0's replaced by the corrupted run's."""
    rc = jrun(model, clean, capture=[RESULT0]).cache[RESULT0]
    rk = jrun(model, corrupted, capture=[RESULT0]).cache[RESULT0]
    return {RESULT0: mj.patch(rc.at[:, :, 0].set(rk[:, :, 0]))}


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_head_out_edges_equal_head_patch(family, tiny_gemma3, tiny_llama, pair):
    """All out-edges of a0.h0 corrupted == a0.h0's result patched (exact, not additive);
    edge a0.h0 -> logits alone == the final stream given the attention output's change."""
    model = tiny_gemma3 if family == "gemma3" else tiny_llama
    clean, corrupted, metric = pair
    g = circuits.graph_of(model)
    one = g.valid.copy()
    one[g.src.index("a0.h0"), g.dst.index("logits")] = False
    masks = np.stack([_head_out_edges_off(model), one, g.valid, np.zeros_like(g.valid)])
    vals = circuits.evaluate_graph(model, clean, corrupted, metric, masks)
    circ, edge, full, empty = np.asarray(vals)
    head = _patch_head0(model, clean, corrupted)
    hand = _metric(model, clean, metric, head)
    base = _metric(model, clean, metric)
    assert abs(hand - base) > 1e-3
    np.testing.assert_allclose(circ, hand, atol=1e-5)
    np.testing.assert_allclose(full, base, atol=1e-5)
    np.testing.assert_allclose(empty, _metric(model, corrupted, metric), atol=1e-4)
    # the single edge: layer 0's attention output (after any post-norm) as with head 0
    # patched, added to the last stream only
    site = "blocks.0.hook_attn_out"
    a_clean = jrun(model, clean, capture=[site]).cache[site]
    a_head = jrun(model, clean, head, capture=[site]).cache[site]
    ref = _metric(model, clean, metric, {"blocks.1.hook_resid_post": mj.add(a_head - a_clean)})
    assert abs(ref - base) > 1e-4
    np.testing.assert_allclose(edge, ref, atol=1e-5)


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
    model = mj.Model(tiny_llama.params, tiny_llama.config, tiny_llama.family._replace(name="qwen3"))
    with pytest.raises(mj.InputError, match="circuits: family 'qwen3' has no defined edge graph"):
        circuits.graph_of(model)
    clean, corrupted, metric = pair
    with pytest.raises(mj.InputError, match="'qwen3'"):
        circuits.eap(model, clean, corrupted, metric)
    assert circuits.graph_of(tiny_llama).n_edges > 0  # the same weights under 'llama' run
