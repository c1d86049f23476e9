"""SAE architectures against hand-written numpy references; the losses' gradients.

Each architecture's encode/decode is compared with a numpy forward written from the
papers' formulas (SAELens's conventions: b_dec subtracted from the input when
`apply_b_dec_to_input`); random non-zero biases, thresholds and gate parameters so a
missing term shows up. Tolerance 1e-5 relative (float32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff

from mechjax import sae as S
from mechjax.errors import InputError
from mechjax.sae import losses

D_IN, D_SAE, K = 12, 40, 5


def _random_sae(arch: str, *, d_out: int | None = None, skip: bool = False, apply=None):
    rng = np.random.RandomState(hash(arch) % 1000)
    d_out = D_IN if d_out is None else d_out
    sae = S.init_sae(
        jax.random.PRNGKey(0), D_IN, D_SAE, arch, k=K, d_out=d_out, skip=skip,
        apply_b_dec_to_input=apply,
    )  # fmt: skip
    f = lambda *s: jnp.asarray(rng.normal(size=s).astype(np.float32))
    sae = sae.replace(W_enc=f(D_IN, D_SAE), b_enc=0.3 * f(D_SAE), b_dec=f(d_out))
    sae = sae.replace(W_dec=f(D_SAE, d_out))
    if sae.threshold is not None:
        sae = sae.replace(threshold=jnp.abs(f(D_SAE)))
    if arch == "gated":
        sae = sae.replace(r_mag=0.3 * f(D_SAE), b_mag=0.3 * f(D_SAE))
    if skip:
        sae = sae.replace(W_skip=0.1 * f(D_IN, d_out))
    return sae


def _np_encode(sae, x):
    p = {k: None if v is None else np.asarray(v, np.float64) for k, v in vars(sae).items() if not k.startswith("_") and k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "r_mag", "b_mag", "W_skip")}  # fmt: skip
    x = np.asarray(x, np.float64)
    sae_in = x - p["b_dec"] if sae.apply_b_dec_to_input else x
    pre = sae_in @ p["W_enc"] + p["b_enc"]
    out = np.zeros_like(pre)
    rows = np.arange(len(x))[:, None]
    if sae.arch == "relu":
        out = np.maximum(pre, 0)
    elif sae.arch == "topk":
        idx = np.argsort(-pre, -1)[:, : sae.k]
        out[rows, idx] = np.maximum(pre[rows, idx], 0)
    elif sae.arch == "abstopk":
        idx = np.argsort(-np.abs(pre), -1)[:, : sae.k]
        out[rows, idx] = pre[rows, idx]
    elif sae.arch in ("jumprelu", "batchtopk"):
        out = np.where((pre > p["threshold"]) & (pre > 0), pre, 0.0)
    elif sae.arch == "gated":
        mag = sae_in @ (p["W_enc"] * np.exp(p["r_mag"])) + p["b_mag"]
        out = (pre > 0) * np.maximum(mag, 0)
    recon = out @ p["W_dec"] + p["b_dec"]
    if p["W_skip"] is not None:
        recon = recon + x @ p["W_skip"]
    return out, recon


# compiled: eager JAX compiles op by op, slow on small CPUs
_encode, _decode = jax.jit(S.encode), jax.jit(S.decode)
_call = jax.jit(lambda s, x: s(x))
_loss = jax.jit(losses.sae_loss, static_argnames="aux_k")


@pytest.mark.parametrize("arch", S.ARCHITECTURES)
@pytest.mark.parametrize("apply", [True, False])
def test_encode_decode_match_numpy(arch, apply):
    sae = _random_sae(arch, apply=apply)
    x = jnp.asarray(np.random.RandomState(1).normal(size=(9, D_IN)).astype(np.float32))
    f_ref, recon_ref = _np_encode(sae, x)
    f = _encode(sae, x)
    np.testing.assert_allclose(f, f_ref, rtol=1e-5, atol=1e-5, err_msg=max_diff(f, f_ref))
    out = _call(sae, x)
    np.testing.assert_allclose(
        out.recon, recon_ref, rtol=1e-5, atol=1e-4, err_msg=max_diff(out.recon, recon_ref)
    )
    np.testing.assert_allclose(
        _decode(sae, f), f_ref @ np.asarray(sae.W_dec) + np.asarray(sae.b_dec), rtol=1e-5, atol=1e-4
    )
    np.testing.assert_array_equal(out.l0, (f_ref != 0).sum(-1))
    # the method and the module-level function a featurizer holds compute the same
    np.testing.assert_array_equal(jax.jit(lambda s, x: s.encode(x))(sae, x), f)


def test_skip_transcoder_matches_numpy():
    sae = _random_sae("relu", d_out=7, skip=True)
    assert sae.is_transcoder and not sae.apply_b_dec_to_input
    x = jnp.asarray(np.random.RandomState(2).normal(size=(4, D_IN)).astype(np.float32))
    _, recon_ref = _np_encode(sae, x)
    recon = _call(sae, x).recon
    np.testing.assert_allclose(recon, recon_ref, rtol=1e-5, atol=1e-4)
    assert recon.shape == (4, 7)


@pytest.mark.parametrize("arch", ["topk", "abstopk"])
def test_topk_keeps_exactly_k(arch):
    sae = _random_sae(arch)
    x = jnp.asarray(np.random.RandomState(3).normal(size=(2, 6, D_IN)).astype(np.float32))
    f = _encode(sae, x)
    assert f.shape == (2, 6, D_SAE)
    if arch == "abstopk":  # signed: exactly k non-zero, some negative
        np.testing.assert_array_equal((f != 0).sum(-1), K)
        assert (f < 0).any()
    else:  # ReLU'd top k: at most k, exactly k where the k-th pre-activation is positive
        pre = np.asarray(S.architectures.pre_activations(sae, x))
        kth = np.sort(pre, -1)[..., -K]
        np.testing.assert_array_equal((f != 0).sum(-1), np.where(kth > 0, K, (pre > 0).sum(-1)))


def test_batchtopk_training_keeps_k_times_batch():
    sae = _random_sae("batchtopk")
    x = jnp.asarray(np.random.RandomState(4).normal(size=(8, D_IN)), jnp.float32)
    pre = jax.jit(S.architectures.pre_activations)(sae, x)
    f, thr = jax.jit(losses.batch_topk, static_argnums=1)(pre, K)
    assert int((f != 0).sum()) == K * 8
    kept = np.asarray(f)[np.asarray(f) > 0]
    assert float(thr) == pytest.approx(kept.min())
    # rows may hold more or fewer than k: the batch shares the budget
    assert len(set(np.asarray((f != 0).sum(-1)).tolist())) > 1


def test_jumprelu_threshold_gets_the_straight_through_gradient():
    sae = _random_sae("jumprelu").replace(bandwidth=0.5)
    x = jnp.asarray(np.random.RandomState(5).normal(size=(64, D_IN)).astype(np.float32))
    z = np.asarray(S.architectures.pre_activations(sae, x), np.float64)
    thr, bw = np.asarray(sae.threshold, np.float64), 0.5
    kern = (np.abs((z - thr) / bw) < 0.5).astype(np.float64)

    def l0_loss(t):
        return S.architectures.step_fn(S.architectures.pre_activations(sae, x), t, bw).sum()

    g = np.asarray(jax.jit(jax.grad(l0_loss))(sae.threshold))
    np.testing.assert_allclose(g, -(1 / bw) * kern.sum(0), rtol=1e-5)
    assert np.abs(g).sum() > 0

    def out_loss(t):
        return S.architectures.jumprelu_fn(S.architectures.pre_activations(sae, x), t, bw).sum()

    g2 = np.asarray(jax.jit(jax.grad(out_loss))(sae.threshold))
    np.testing.assert_allclose(g2, -(thr / bw) * kern.sum(0), rtol=1e-5)
    # the whole training loss reaches the threshold too
    coeffs = losses.Coeffs(l0=0.1)
    grad = jax.jit(jax.grad(lambda s: losses.sae_loss(s, x, x, jnp.zeros(D_SAE, bool), coeffs)[0]))(
        sae
    )
    assert grad.threshold is not None and float(jnp.abs(grad.threshold).sum()) > 0


def test_relu_l1_is_weighted_by_decoder_norms():
    sae = _random_sae("relu")
    x = jnp.asarray(np.random.RandomState(6).normal(size=(16, D_IN)).astype(np.float32))
    f_ref, recon = _np_encode(sae, x)
    norms = np.linalg.norm(np.asarray(sae.W_dec, np.float64), axis=-1)
    want = ((recon - np.asarray(x)) ** 2).sum(-1).mean() + 0.7 * (f_ref * norms).sum(-1).mean()
    loss, parts = _loss(sae, x, x, jnp.zeros(D_SAE, bool), losses.Coeffs(l1=0.7))
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(parts.aux) == 0.0


def test_aux_k_reconstructs_the_residual_from_dead_latents_only():
    sae = _random_sae("topk")
    x = jnp.asarray(np.random.RandomState(7).normal(size=(16, D_IN)).astype(np.float32))
    none_dead = jnp.zeros(D_SAE, bool)
    dead = jnp.zeros(D_SAE, bool).at[:10].set(True)
    l_none, _ = _loss(sae, x, x, none_dead, losses.Coeffs(), aux_k=4)
    l_dead, parts = _loss(sae, x, x, dead, losses.Coeffs(), aux_k=4)
    assert float(l_dead) > float(l_none) and float(parts.aux) > 0
    aux = lambda s: losses.sae_loss(s, x, x, dead, losses.Coeffs(aux=1.0), aux_k=4)[1].aux
    g = jax.jit(jax.grad(aux))(sae)
    enc = np.abs(np.asarray(g.W_enc)).sum(0)
    assert enc[:10].sum() > 0 and enc[10:].sum() == 0  # only dead latents learn from it


def test_normalize_decoder_and_errors():
    sae = S.normalize_decoder(_random_sae("topk"))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(sae.W_dec), axis=-1), 1.0, rtol=1e-6)
    with pytest.raises(InputError, match="d_in = 12"):
        sae.encode(jnp.zeros((3, 13)))
    with pytest.raises(InputError, match="unknown SAE architecture 'relu6'.*valid"):
        S.init_sae(jax.random.PRNGKey(0), 4, 8, "relu6")
    with pytest.raises(InputError, match="needs 0 < k"):
        S.init_sae(jax.random.PRNGKey(0), 4, 8, "topk", k=0)
    assert "SAE(topk, d_in=12, d_sae=40, k=5)" == repr(sae)


@pytest.mark.parametrize("arch", ["topk", "abstopk"])
def test_sparse_decode_in_the_loss_equals_the_dense_forward(arch):
    sae = _random_sae(arch)
    x = jnp.asarray(np.random.RandomState(8).normal(size=(10, D_IN)).astype(np.float32))
    _, parts = _loss(sae, x, x, jnp.zeros(D_SAE, bool), losses.Coeffs())
    out = _call(sae, x)
    np.testing.assert_allclose(parts.recon, out.recon, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(parts.fires, (np.asarray(out.latents) != 0).sum(0))
    assert float(parts.l0) == pytest.approx(float(out.l0.mean()))
