"""analyses/induction at large N: the O(N) loss equals the Gram-matrix dynamics, the
gradient flow agrees with gradient descent, the plateau's Hessian, the scaling fits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mechjax.analyses import induction as I
from mechjax.analyses.induction import flow, large_n


def _gram64(n, query):
    g = I.gram_data(n, query)
    return g._replace(**{k: getattr(g, k).astype(jnp.float64) for k in ("Gc", "P", "PM", "gq")})


_reduced = jax.jit(I.reduced_loss)
_reduced_grad = jax.jit(jax.grad(lambda t, g: I.reduced_loss(t, g)[0]))
_structured = jax.jit(large_n.structured_losses, static_argnums=(1, 2))
_structured_grad = jax.jit(
    jax.grad(lambda t, n, w: large_n.structured_loss(t, n, w)[0]), static_argnums=1
)


def test_structured_loss_equals_the_gram_dynamics():
    """Per query index: loss and attention equal `reduced_loss` (float64, random
    coordinates); a seed's weighted loss and its gradient equal the Gram form on the same
    query multiset; padding to a capacity with a traced N changes nothing."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for n in (3, 8):
            th = jnp.asarray(rng.normal(size=19) * 1.5)
            loss, att = _structured(th, n, None)
            ref = [_reduced(th, _gram64(n, [j])) for j in range(n)]
            np.testing.assert_allclose(loss, [float(r[0]) for r in ref], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(att, [float(r[1]) for r in ref], rtol=1e-12, atol=1e-12)
            w = large_n.query_weights(n, [3])[1]
            query = np.random.default_rng(3).integers(0, n, n)
            g_ours = _structured_grad(th, n, jnp.asarray(w))
            g_ref = _reduced_grad(th, _gram64(n, query))
            np.testing.assert_allclose(g_ours, g_ref, rtol=1e-10, atol=1e-13)
            padded = jax.jit(large_n.structured_losses, static_argnums=2)(th, jnp.int32(n), 16)
            np.testing.assert_allclose(padded[0][:n], loss, rtol=1e-13)
            assert np.all(np.asarray(padded[0][n:]) == 0.0)
    with pytest.raises(TypeError, match="capacity"):
        large_n.structured_losses(jnp.zeros(19), jnp.int32(3))


def test_query_weights_are_the_sampled_query_sets():
    w = large_n.query_weights(6, [0, 1])
    assert w.shape == (3, 6) and np.allclose(w.sum(1), 1.0) and np.allclose(w[0], 1 / 6)
    for row, seed in zip(w[1:], (0, 1)):
        q = np.asarray(I.sample_query_sets(6, [seed], 6).target[0] - 1) // 2
        np.testing.assert_allclose(row, np.bincount(q, minlength=6) / 6)


def test_gradient_flow_agrees_with_gradient_descent():
    """t_ICL of the flow (continuous time) against GD at step 1 (whole steps) on the
    population of N = 8: within 3 steps; on the plateau (half of t_ICL) the flow's
    coordinates are GD's to 2% of their size."""
    for n in (8,):
        run = flow.gradient_flow(n, large_n.query_weights(n, [])[0])
        gd = I.train_reduced(I.gram_data(n), lr=1.0)
        t_gd = I.emergence_step(gd.loss)
        assert abs(run.t_icl - t_gd) <= 3.0, (n, run.t_icl, t_gd)
        i = int(np.argmin(np.abs(run.times - t_gd / 2)))
        k = int(round(run.times[i]))
        gap = np.abs(run.theta[i] - gd.theta[k]).max()
        assert gap < 0.02 * np.abs(gd.theta[k]).max(), (gap, np.abs(gd.theta[k]).max())
        assert run.loss[0] == pytest.approx(gd.loss[0], rel=1e-6)
        assert run.t_end == pytest.approx(1.5 * run.t_icl)
        on = flow.onset_times(run)
        assert on["gamma_3"] < on["beta_2"] < on["alpha_3"] < run.t_end


def test_plateau_hessian_and_harmonic_share():
    """At the plateau, the finite-difference Hessian predicts the loss change along a
    random direction (second differences of the loss, an independent route); the gamma
    gradient vanishes; each query index's share of the beta_2 gradient falls as 1/(j+1)."""
    n = 16
    p = flow.plateau(n)
    with jax.enable_x64(True):
        vg = flow._bound(n, large_n.query_weights(n, [])[0])
        theta = np.zeros(19)
        theta[flow.GAMMA] = p["gamma"]
        H = flow._hessian_fd(vg, theta, 1e-3)
        assert np.abs(vg(theta)[2][flow.GAMMA]).max() < 1e-6
        d = np.random.default_rng(0).normal(size=19)
        eps = 1e-3
        second = (vg(theta + eps * d)[0] - 2 * vg(theta)[0] + vg(theta - eps * d)[0]) / eps**2
    assert second == pytest.approx(d @ H @ d, rel=1e-4)
    assert p["min_curvature_x_n2"] < 0 < p["grad_beta_2_x_n2"]
    js = np.array(list(p["beta_2_share_x_j1"]))
    shares = np.array(list(p["beta_2_share_x_j1"].values()))
    raw = shares / (js + 1)  # the shares themselves fall 16-fold from j = 0 to N - 1 ...
    assert raw[0] / raw[-1] > 8 and np.all(np.diff(raw) < 0), raw
    assert shares.max() / shares.min() < 2, shares  # ... times (j + 1), within 2


def test_scaling_fits_recover_a_log_corrected_power_law():
    ns = [16, 32, 64, 128, 256]
    t = [7.0 * n**2 / np.log(n) for n in ns]
    fit = flow.fit_log_corrected(ns, t)
    assert fit.slope == pytest.approx(2.0, abs=1e-9) and fit.power == pytest.approx(1.0, abs=1e-9)
    slopes = flow.local_slopes(ns, t)
    assert list(slopes) == ["16-32", "32-64", "64-128", "128-256"]
    mid = np.sqrt(16 * 32)
    assert slopes["16-32"] == pytest.approx(2 - np.log(np.log(32) / np.log(16)) / np.log(2))
    assert 2 - 1 / np.log(mid) == pytest.approx(slopes["16-32"], abs=0.01)
    assert flow.capacity(3) == 64 and flow.capacity(65) == 128 and flow.capacity(1024) == 1024
