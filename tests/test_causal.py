"""Featurizers, interchange interventions, DAS training and IIA (mechjax.causal)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mechjax as mj
from mechjax import causal as C
from mechjax.causal import das
from mechjax.causal.data import CounterfactualData
from mechjax.errors import InputError, InterventionError
from mechjax.io.families import family_of_module
from mechjax.models import llama

D = 32
CFG = C.TrainConfig(steps=30, lr=3e-2, batch_size=16)


@pytest.fixture(scope="module")
def model():
    cfg = llama.Config(
        d_model=D, n_layers=3, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=48, d_vocab=50, n_ctx=64
    )
    fam = family_of_module("llama")
    return mj.Model(fam.init(jax.random.PRNGKey(0), cfg, scale=0.3), cfg, fam)


def _data(n=24, seed=0, base_len=7, src_len=9, variable="v"):
    """Random pairs with per-row positions and lengths (right padding)."""
    rng = np.random.RandomState(seed)
    base = rng.randint(1, 50, (n, base_len)).astype(np.int32)
    source = rng.randint(1, 50, (n, src_len)).astype(np.int32)
    blen = rng.randint(4, base_len + 1, n)
    slen = rng.randint(4, src_len + 1, n)
    bmask = np.arange(base_len)[None] < blen[:, None]
    smask = np.arange(src_len)[None] < slen[:, None]
    base[~bmask], source[~smask] = 0, 0
    bpos = (blen - 1)[:, None].astype(np.int32)
    spos = rng.randint(0, slen)[:, None].astype(np.int32)
    labels = rng.randint(0, 50, n).astype(np.int32)
    return CounterfactualData(
        base, source, bmask, smask, bpos, spos, labels, labels.copy(), variable, "random"
    )


def _source_acts(model, data, layer):
    name = mj.act_name("resid_pre", layer)
    return mj.run(model, jnp.asarray(data.source), capture=name).cache[name]


def test_identity_on_every_dimension_is_activation_patching(model):
    data = _data()
    name = mj.act_name("resid_pre", 1)
    src = _source_acts(model, data, 1)
    iv = C.interchange_at(C.identity(D), src, data.base_positions, data.source_positions)
    got = mj.run(model, jnp.asarray(data.base), {name: iv}).logits
    # reference: a patch of the whole site whose value is the base run's activation with
    # each row's position replaced by that row's source vector (same batch, same program)
    base = np.array(mj.run(model, jnp.asarray(data.base), capture=name).cache[name])
    src = np.asarray(src)
    for b in range(len(data)):
        base[b, data.base_positions[b, 0]] = src[b, data.source_positions[b, 0]]
    ref = mj.run(model, jnp.asarray(data.base), {name: mj.patch(jnp.asarray(base))}).logits
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert not np.allclose(got, mj.run(model, jnp.asarray(data.base)).logits, atol=1e-3)


@pytest.mark.parametrize(
    "feat",
    [
        C.identity(D, dims=np.zeros(D, bool)),
        C.identity(D, dims=[]),  # an empty list (numpy makes it float64)
        C.rotation(jax.random.PRNGKey(1), D, 0),
        C.pca(np.random.RandomState(0).randn(40, D), 0),
    ],
    ids=["identity", "identity-empty-list", "rotation", "pca"],
)
def test_zero_dimensions_is_a_no_op(model, feat):
    data = _data()
    name = mj.act_name("resid_pre", 2)
    iv = C.interchange_at(
        feat, _source_acts(model, data, 2), data.base_positions, data.source_positions
    )
    got = mj.run(model, jnp.asarray(data.base), {name: iv}).logits
    ref = mj.run(model, jnp.asarray(data.base)).logits
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_featurizer_inverses_are_exact():
    h = jax.random.normal(jax.random.PRNGKey(2), (5, 3, D))
    feats = [
        C.rotation(jax.random.PRNGKey(3), D, 7),
        C.boundless_rotation(jax.random.PRNGKey(4), D),
        C.pca(np.random.RandomState(1).randn(60, D) * 3 + 1, 5),
        C.neuron_mask(D),
        C.sae_features(
            lambda p, x: jax.nn.relu(x @ p["W"]),
            lambda p, f: f @ p["W"].T,
            {"W": jax.random.normal(jax.random.PRNGKey(5), (D, 64)) / 8},
            D,
            64,
        ),
    ]
    for f in feats:
        np.testing.assert_allclose(f.invert(*f.featurize(h)), h, atol=1e-5)
    full = C.boundless_rotation(jax.random.PRNGKey(6), D)
    b = full.directions()
    np.testing.assert_allclose(b @ b.T, np.eye(D), atol=1e-5)  # a rotation of the whole space


def test_rotation_swaps_exactly_its_subspace():
    r = C.rotation(jax.random.PRNGKey(7), D, 4)
    hb, hs = jax.random.normal(jax.random.PRNGKey(8), (2, 10, D))
    out = C.interchange(r, hb, hs)
    B = r.directions()
    np.testing.assert_allclose(out @ B, hs @ B, atol=1e-5)  # the variable from the source
    P = np.eye(D) - B @ B.T
    np.testing.assert_allclose(out @ P, hb @ P, atol=1e-5)  # the rest from the base


def test_a_mechjax_sae_as_a_featurizer(model):
    """`from_sae`: swapping latents S of a TopK SAE gives h_base + decode(f') - decode(f_base)
    with f' the base's latents but S from the source (numpy oracle); a learned mask over
    the latents trains its logits only, the SAE frozen; transcoders are refused."""
    from mechjax import sae as S

    sae = S.init_sae(jax.random.PRNGKey(15), D, 64, "topk", k=6)
    hb, hs = np.asarray(jax.random.normal(jax.random.PRNGKey(16), (2, 5, D)))
    dims = np.arange(0, 64, 3)
    got = C.interchange(C.from_sae(sae, dims), jnp.asarray(hb), jnp.asarray(hs))
    fb, fs = (np.asarray(S.encode(sae, jnp.asarray(x))) for x in (hb, hs))
    f = fb.copy()
    f[..., dims] = fs[..., dims]
    w, b = np.asarray(sae.W_dec), np.asarray(sae.b_dec)
    want = hb + (f @ w + b) - (fb @ w + b)
    np.testing.assert_allclose(got, want, atol=1e-5)

    data = _data(n=32)
    cfg = C.TrainConfig(steps=8, lr=5e-2, batch_size=16, temperature=(1.0, 0.05))
    f0 = C.from_sae(sae, learned=True)
    out = C.train(model, data, f0, layer=1, config=cfg)
    assert not np.allclose(out.featurizer.logits, f0.logits)
    np.testing.assert_array_equal(out.featurizer.params.W_enc, sae.W_enc)
    assert 0.0 <= C.iia(model, data, out.featurizer, layer=1) <= 1.0

    transcoder = S.init_sae(jax.random.PRNGKey(17), D, 64, "topk", k=6, d_out=D + 1)
    with pytest.raises(InputError, match="transcoder"):
        C.from_sae(transcoder)


def test_several_sources_at_once():
    hb = jax.random.normal(jax.random.PRNGKey(9), (4, D))
    hs = jax.random.normal(jax.random.PRNGKey(10), (2, 4, D))
    masks = np.zeros((2, D), bool)
    masks[0, :3], masks[1, 3:5] = True, True
    out = C.interchange_many(C.identity(D), jnp.asarray(masks), hb, hs)
    np.testing.assert_allclose(out[:, :3], hs[0][:, :3])
    np.testing.assert_allclose(out[:, 3:5], hs[1][:, 3:5])
    np.testing.assert_allclose(out[:, 5:], hb[:, 5:])


@pytest.mark.parametrize("mode", ["decode", "suffix"])
def test_cached_prefix_equals_the_hooked_run(model, mode):
    """Both cached paths give the predictions of mj.run with an Interchange hook: "decode"
    (the bases' KV cache, one token per row rerun) and "suffix" (cached residuals, layers
    L.. rerun over the whole prompt)."""
    data = _data()
    r = C.rotation(jax.random.PRNGKey(11), D, 6)
    acts = C.site_acts(model, data, [1, 2], mode=mode)
    assert acts.mode == mode
    for layer in (1, 2):
        fast, fp = C.iia(model, data, r, layer=layer, acts=acts, return_predictions=True)
        slow, sp = C.iia(
            model, data, r, site=mj.act_name("resid_pre", layer), return_predictions=True
        )
        np.testing.assert_array_equal(fp, sp)
        assert fast == slow


def test_decode_mode_needs_the_last_token(model):
    data = _data()
    import dataclasses

    earlier = dataclasses.replace(data, base_positions=np.zeros_like(data.base_positions))
    assert C.site_acts(model, earlier, [1]).mode == "suffix"
    with pytest.raises(InputError, match="last real token"):
        C.site_acts(model, earlier, [1], mode="decode")


def test_training_keeps_the_rotation_orthonormal_and_lowers_the_loss(model):
    data = _data(n=32)
    r0 = C.rotation(jax.random.PRNGKey(12), D, 4)
    out = C.train(model, data, r0, layer=1, config=CFG)
    assert C.orthogonality_error(out.featurizer) < 1e-5
    losses = np.asarray(out.losses)
    assert losses[-10:].mean() < losses[:10].mean()
    assert not np.allclose(out.featurizer.directions(), r0.directions())


def test_search_is_one_program_and_matches_per_layer_iia(model):
    train, test = _data(n=32, seed=1), _data(n=20, seed=2)
    res = C.search(model, train, test, lambda k: C.rotation(k, D, 4), [0, 2], config=CFG)
    assert res["layers"] == [0, 2] and np.asarray(res["losses"]).shape == (2, CFG.steps)
    for i, layer in enumerate((0, 2)):
        f = das.take(res["featurizers"], i)
        assert C.iia(model, test, f, layer=layer) == pytest.approx(res["iia"][i])


def test_learned_masks_train_and_harden(model):
    data = _data(n=32)
    cfg = C.TrainConfig(steps=CFG.steps, lr=5e-2, batch_size=16, temperature=(1.0, 0.05))
    for f0 in (C.neuron_mask(D), C.boundless_rotation(jax.random.PRNGKey(13), D)):
        out = C.train(model, data, f0, layer=1, config=cfg)
        assert not np.allclose(out.featurizer.logits, f0.logits)
        hard = np.asarray(out.featurizer.mask())
        assert set(np.unique(hard)) <= {0.0, 1.0}


def test_mask_logits_learn_at_their_own_rate(model):
    """The mask logits train at `mask_lr`, the rotation at `lr`: Adam moves a leaf by at
    most about its rate per step, so at a rotation's rate a mask starting at logit -1
    could never open (every hard mask closed: the intervention a no-op)."""
    data = _data(n=32)
    steps = 30
    f0 = C.boundless_rotation(jax.random.PRNGKey(13), D, 8)
    slow = C.TrainConfig(steps=steps, lr=1e-3, mask_lr=1e-3, batch_size=16)
    fast = C.TrainConfig(steps=steps, lr=1e-3, mask_lr=0.1, batch_size=16)
    moved = {}
    for name, cfg in (("slow", slow), ("fast", fast)):
        out = C.train(model, data, f0, layer=1, config=cfg)
        moved[name] = np.abs(np.asarray(out.featurizer.logits) - np.asarray(f0.logits)).max()
        # the rotation's own rate is unchanged by mask_lr
        assert (
            np.abs(np.asarray(out.featurizer.raw) - np.asarray(f0.raw)).max() <= 1.1 * steps * 1e-3
        )
    assert moved["slow"] <= 1.1 * steps * 1e-3
    assert moved["fast"] > 1.0  # past the hard mask's threshold at 0


def test_save_and_load_round_trip(model, tmp_path):
    r = C.rotation(jax.random.PRNGKey(14), D, 3)
    site = mj.act_name("resid_pre", 1)
    das.save(r, tmp_path / "das", site=site, meta={"variable": "v"})
    back, info = das.load(tmp_path / "das", site=site, width=D)
    assert isinstance(back, C.Rotation) and info["meta"] == {"variable": "v"}
    np.testing.assert_array_equal(back.directions(), r.directions())
    with pytest.raises(InputError, match="trained at"):
        das.load(tmp_path / "das", site=mj.act_name("resid_pre", 2))
    with pytest.raises(InputError, match="width"):
        das.load(tmp_path / "das", width=D + 1)


def test_bad_input_is_named(model):
    with pytest.raises(InputError, match="k = 40 features, but the site's width is 32"):
        C.rotation(jax.random.PRNGKey(0), D, 40)
    data = _data()
    src = _source_acts(model, data, 1)
    name = mj.act_name("resid_pre", 1)
    with pytest.raises(InterventionError, match="reads width 16"):
        mj.run(
            model,
            jnp.asarray(data.base),
            {name: C.interchange_at(C.identity(16), src[..., :16], data.base_positions)},
        )
    with pytest.raises(InterventionError, match="out of range"):
        mj.run(
            model,
            jnp.asarray(data.base),
            {name: C.interchange_at(C.identity(D), src, np.full((24, 1), 8), data.base_positions)},
        )
    # bases and sources of different lengths without positions
    with pytest.raises(InterventionError, match="base has 7 positions and the source 9"):
        mj.run(model, jnp.asarray(data.base), {name: C.interchange_at(C.identity(D), src)})
    with pytest.raises(InputError, match="not in \\[0, 3\\)"):
        C.site_acts(model, data, [3])
    with pytest.raises(InputError, match="nothing to train"):
        C.train(model, data, C.identity(D), layer=1)


def test_families_whose_layers_differ_take_the_per_layer_path():
    """Gemma 3 interleaves sliding-window and global layers: each layer compiles its own
    program, and the cached-prefix path still equals the hooked run."""
    from mechjax.models import gemma3

    cfg = gemma3.Config(
        d_model=D,
        n_layers=3,
        n_heads=2,
        n_kv_heads=1,
        d_head=16,
        d_mlp=48,
        d_vocab=50,
        n_ctx=64,
        sliding_window=4,
        layer_types=(True, False, True),
        query_pre_attn_scalar=16.0,
    )
    fam = family_of_module("gemma3")
    g = mj.Model(fam.init(jax.random.PRNGKey(3), cfg), cfg, fam)
    assert not das._layer_invariant(g)
    train, test = _data(n=32, seed=1), _data(n=20, seed=2)
    res = C.search(g, train, test, lambda k: C.rotation(k, D, 4), [0, 1], config=CFG)
    for i, layer in enumerate((0, 1)):
        f = das.take(res["featurizers"], i)
        _, fast = C.iia(g, test, f, layer=layer, return_predictions=True)
        slow, hooked = C.iia(
            g, test, f, site=mj.act_name("resid_pre", layer), return_predictions=True
        )
        np.testing.assert_array_equal(fast, hooked)
        assert slow == pytest.approx(res["iia"][i])
