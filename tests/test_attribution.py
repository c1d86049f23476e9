"""AtP, AtP* and integrated gradients against exact patching on a tiny Llama."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff

import mechjax as mj
from mechjax import attribution, metrics

B, P = 2, 5


@pytest.fixture(scope="module")
def pair():
    rng = np.random.RandomState(2)
    clean = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    corrupted = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    return clean, corrupted, metrics.LogitDiff(jnp.array([1, 2]), jnp.array([3, 4]))


@functools.partial(jax.jit, static_argnames=("name",))
def _patched(model, tokens, value, pos, metric, name):
    return metric(mj.run(model, tokens, {name: mj.Patch(value, pos)}).logits)


def test_atp_exact_on_linear_site(tiny_llama, pair):
    """Logits are linear in ln_final.hook_normalized, so AtP there is exact patching."""
    clean, corrupted, metric = pair
    site = "ln_final.hook_normalized"
    got = attribution.atp(tiny_llama, clean, corrupted, metric, [site])[site]
    src = mj.run(tiny_llama, corrupted, capture=[site]).cache[site]
    base = float(metric(mj.run(tiny_llama, clean).logits))
    ref = np.array(
        [
            float(_patched(tiny_llama, clean, src, jnp.array([p]), metric, site)) - base
            for p in range(P)
        ]
    )
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5, rtol=0, err_msg=max_diff(got, ref))


def test_atp_shapes_and_graddrop(tiny_llama, pair):
    clean, corrupted, metric = pair
    plain = attribution.atp(tiny_llama, clean, corrupted, metric, ["z", "mlp_out"])
    gd = attribution.atp(tiny_llama, clean, corrupted, metric, ["z", "mlp_out"], grad_drop=True)
    assert plain["blocks.0.attn.hook_z"].shape == (P, 4)
    assert plain["blocks.1.hook_mlp_out"].shape == (P,)
    # last-layer nodes: dropping an earlier layer changes nothing, dropping their own
    # layer zeroes them, so GradDrop's 1/(L-1) sum |.| is |AtP|
    for name in ("blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"):
        np.testing.assert_allclose(gd[name], jnp.abs(plain[name]), atol=1e-6)
    assert not np.allclose(gd["blocks.0.hook_mlp_out"], jnp.abs(plain["blocks.0.hook_mlp_out"]))


def test_qk_fix_equals_exact_softmax(tiny_llama, pair):
    """The QK fix equals (pattern after patching one rotated q/k) - pattern, times dm/dA."""
    clean, corrupted, metric = pair
    fixed = attribution.atp_qk_fix(tiny_llama, clean, corrupted, metric)
    pat, rq, rk = (
        "blocks.0.attn.hook_pattern",
        "blocks.0.attn.hook_rot_q",
        "blocks.0.attn.hook_rot_k",
    )
    src = mj.run(tiny_llama, corrupted, capture=[rq, rk]).cache
    base = mj.run(tiny_llama, clean, capture=[pat]).cache[pat]

    def f(d):
        return metric(mj.run(tiny_llama, clean, {pat: mj.add(d)}).logits)

    g = jax.grad(f)(jnp.zeros_like(base))
    for name, site, pos, head in [
        (rq, "blocks.0.attn.hook_q", 3, 1),
        (rk, "blocks.0.attn.hook_k", 1, 1),
    ]:
        out = mj.run(
            tiny_llama,
            clean,
            {name: mj.patch(src[name], positions=[pos], heads=[head])},
            capture=[pat],
        ).cache[pat]
        ref = float(((out - base) * g).sum())
        np.testing.assert_allclose(fixed[site][pos, head], ref, atol=1e-5)


def test_integrated_gradients_completeness(tiny_llama, pair):
    clean, corrupted, metric = pair
    ig = attribution.integrated_gradients(
        tiny_llama, clean, corrupted, metric, "hook_embed", steps=128, chunk_size=32
    )
    total = float(
        metric(mj.run(tiny_llama, clean).logits) - metric(mj.run(tiny_llama, corrupted).logits)
    )
    assert ig.shape == (P,)
    assert abs(float(ig.sum()) - total) < 5e-3, (float(ig.sum()), total)  # 8 steps: 1.4 off


def test_bad_inputs(tiny_llama, pair):
    clean, corrupted, metric = pair
    with pytest.raises(mj.InputError, match="same shape"):
        attribution.atp(tiny_llama, clean, corrupted[:1], metric)
    with pytest.raises(mj.InputError, match="steps"):
        attribution.integrated_gradients(tiny_llama, clean, corrupted, metric, steps=0)


@pytest.mark.parametrize("family", ["gpt2", "gemma3"])
def test_qk_fix_other_families(family):
    """GPT-2 (no rotary: q/k sites) and Gemma 3 (its own score scale): the fix equals the
    exact pattern change times dm/dA, as for Llama."""
    from mechjax.io.families import family_for

    fam = family_for(family)
    if family == "gpt2":
        from mechjax.models.gpt2 import Config

        cfg = Config(d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64, d_vocab=50, n_ctx=8)
        q, k = "blocks.1.attn.hook_q", "blocks.1.attn.hook_k"
    else:
        from mechjax.models.gemma3 import Config

        cfg = Config(
            d_model=32,
            n_layers=2,
            n_heads=4,
            n_kv_heads=2,
            d_head=8,
            d_mlp=48,
            d_vocab=50,
            query_pre_attn_scalar=16.0,
            sliding_window=3,
        )
        q, k = "blocks.1.attn.hook_rot_q", "blocks.1.attn.hook_rot_k"
    model = mj.Model(fam.init(jax.random.PRNGKey(3), cfg, scale=0.3), cfg, fam)
    rng = np.random.RandomState(4)
    clean = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    corrupted = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    metric = metrics.LogitDiff(jnp.array([1, 2]), jnp.array([3, 4]))
    fixed = attribution.atp_qk_fix(model, clean, corrupted, metric)
    pat = "blocks.1.attn.hook_pattern"
    src = mj.run(model, corrupted, capture=[q, k]).cache
    base = mj.run(model, clean, capture=[pat]).cache[pat]
    g = jax.grad(lambda d: metric(mj.run(model, clean, {pat: mj.add(d)}).logits))(
        jnp.zeros_like(base)
    )
    checked = 0
    for name, out_site, pos, head in [
        (q, "blocks.1.attn.hook_q", 4, 1),
        (k, "blocks.1.attn.hook_k", 2, 1),
    ]:
        out = mj.run(
            model, clean, {name: mj.patch(src[name], positions=[pos], heads=[head])}, capture=[pat]
        ).cache[pat]
        ref = float(((out - base) * g).sum())
        assert abs(ref) > 1e-4  # the patch does change the pattern
        np.testing.assert_allclose(fixed[out_site][pos, head], ref, atol=1e-5)
        checked += 1
    assert checked == 2
