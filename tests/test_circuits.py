"""EAP / EAP-IG edge scores and exact edge patching on a tiny GQA Llama."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import jrun, max_diff

import mechjax as mj
from mechjax import circuits, metrics

B, P = 2, 4


@pytest.fixture(scope="module")
def pair():
    rng = np.random.RandomState(3)
    clean = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    corrupted = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    return clean, corrupted, metrics.Negate(metrics.LogitDiff(jnp.array([1, 2]), jnp.array([3, 4])))


def test_graph_and_ungrouping(tiny_llama, pair):
    g = circuits.graph_of(tiny_llama)
    n, h = 2, 4
    assert len(g.src) == 1 + n * (h + 1) and len(g.dst) == n * (3 * h + 1) + 1
    # input -> every dst; a0.h* -> layer-1 heads, m0, m1, logits; m1 -> logits only
    assert g.valid[0].all() and g.valid[g.src.index("m1")].sum() == 1
    assert g.valid[g.src.index("a0.h0"), g.dst.index("m0")]
    assert not g.valid[g.src.index("a0.h0"), g.dst.index("a0.h1<q>")]
    un = circuits.ungroup_gqa(tiny_llama)
    np.testing.assert_allclose(
        mj.run(un, pair[0]).logits, mj.run(tiny_llama, pair[0]).logits, atol=1e-5
    )


def test_graph_forward_identity_and_empty(tiny_llama, pair):
    clean, corrupted, metric = pair
    g = circuits.graph_of(tiny_llama)
    full = circuits.evaluate_graph(tiny_llama, clean, corrupted, metric, g.valid)
    empty = circuits.evaluate_graph(tiny_llama, clean, corrupted, metric, np.zeros_like(g.valid))
    np.testing.assert_allclose(full, metric(mj.run(tiny_llama, clean).logits), atol=1e-5)
    np.testing.assert_allclose(empty, metric(mj.run(tiny_llama, corrupted).logits), atol=1e-4)


def test_exact_edge_equals_single_site_patch(tiny_llama, pair):
    """Edge input -> m1 alone: mlp_in of layer 1 gets embed(corr) - embed(clean)."""
    clean, corrupted, metric = pair
    exact, g = circuits.exact_edge_scores(tiny_llama, clean, corrupted, metric)
    emb = [
        mj.run(tiny_llama, t, capture=["hook_embed"]).cache["hook_embed"]
        for t in (clean, corrupted)
    ]
    patched = mj.run(tiny_llama, clean, {"blocks.1.hook_mlp_in": mj.add(emb[1] - emb[0])})
    ref = metric(patched.logits) - metric(mj.run(tiny_llama, clean).logits)
    np.testing.assert_allclose(exact[0, g.dst.index("m1")], ref, atol=1e-5)
    assert float(jnp.abs(exact).sum()) > 0 and np.all(np.asarray(exact)[~g.valid] == 0)


def test_eap_ig_one_step_is_eap_at_corrupted_endpoint(tiny_llama, pair):
    clean, corrupted, metric = pair
    s_eap, g = circuits.eap(tiny_llama, clean, corrupted, metric)
    s_act, _ = circuits.eap_ig(tiny_llama, clean, corrupted, metric, steps=2, variant="activations")
    assert s_act.shape == s_eap.shape and bool(jnp.isfinite(s_act).all())
    # EAP-IG inputs with one step = the gradient at the corrupted endpoint: EAP with the
    # roles of the runs swapped and the sign of Delta flipped
    s_in, _ = circuits.eap_ig(tiny_llama, clean, corrupted, metric, steps=1)
    s_swap, _ = circuits.eap(tiny_llama, corrupted, clean, metric)
    np.testing.assert_allclose(s_in, -s_swap, atol=1e-5, err_msg=max_diff(s_in, -s_swap))
    # EAP approximates exact edge patching (first order): strongly correlated here
    exact, _ = circuits.exact_edge_scores(tiny_llama, clean, corrupted, metric)
    v = g.valid
    r = np.corrcoef(np.asarray(s_eap)[v], np.asarray(exact)[v])[0, 1]
    assert r > 0.5, r


def test_bad_inputs(tiny_llama, pair):
    clean, corrupted, metric = pair
    with pytest.raises(mj.InputError, match="same shape"):
        circuits.eap(tiny_llama, clean, corrupted[:, :2], metric)
    with pytest.raises(mj.InputError, match="variant"):
        circuits.eap_ig(tiny_llama, clean, corrupted, metric, variant="nodes")


def test_clean_corrupted_is_the_mean_of_the_endpoint_gradients(tiny_llama, pair):
    """clean_corrupted(input -> m1) = (g_clean + g_corrupted) . Delta / 2, by hand.

    Pins the sign convention: on SmolLM2 IOI the two endpoint gradients of the edge
    input -> m0 disagree in sign (+0.52 and -1.04 while the exact effect is +10.1), so
    its clean-corrupted score is negative and the signed ranking puts it last
    (docs/reproductions/mib/report.md); that is the method, not a sign error."""
    clean, corrupted, metric = pair
    cc, g = circuits.clean_corrupted(tiny_llama, clean, corrupted, metric)
    emb = [jrun(tiny_llama, t, capture=["hook_embed"]).cache["hook_embed"] for t in (clean, corrupted)]
    delta = emb[1] - emb[0]

    def m(tokens, d):
        return metric(mj.run(tiny_llama, tokens, {"blocks.1.hook_mlp_in": mj.add(d)}).logits)

    grad = jax.jit(jax.grad(m, argnums=1))
    g_clean, g_corr = (float((grad(t, jnp.zeros_like(delta)) * delta).sum()) for t in (clean, corrupted))
    want = (g_clean + g_corr) / 2
    np.testing.assert_allclose(cc[0, g.dst.index("m1")], want, rtol=1e-4, atol=1e-6)
    assert abs(g_clean - g_corr) > 1e-3  # the endpoints differ: not EAP twice
