"""Interventions never silently do nothing: index ranges, index ranks, mean over one.

A tiny random Llama shaped like SmolLM2's attention (9 query heads, 3 key/value heads)
and a 14-token prompt, so the examples read like a researcher's first hour with
`mj.load("smollm2-135m")`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff

import mechjax as mj
from mechjax.io.families import family_of_module
from mechjax.models.llama import Config as LlamaConfig

RESID = "blocks.0.hook_resid_pre"
Z = "blocks.0.attn.hook_z"
K = "blocks.0.attn.hook_k"
Q = "blocks.0.attn.hook_q"
N_POS, N_HEADS, N_KV, D_HEAD, D_MODEL = 14, 9, 3, 4, 16


@pytest.fixture(scope="module")
def smol() -> mj.Model:
    llama = family_of_module("llama")
    cfg = LlamaConfig(
        d_model=D_MODEL,
        n_layers=1,
        n_heads=N_HEADS,
        n_kv_heads=N_KV,
        d_head=D_HEAD,
        d_mlp=24,
        d_vocab=40,
        n_ctx=32,
        rope_theta=10000.0,
    )
    return mj.Model(llama.init(jax.random.PRNGKey(0), cfg, scale=0.3), cfg, llama)


@pytest.fixture(scope="module")
def prompt() -> jnp.ndarray:
    return jnp.asarray(np.random.RandomState(1).randint(0, 40, (2, N_POS)), jnp.int32)


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), atol=tol, rtol=0, err_msg=max_diff(a, b)
    )


def _raises_eager_and_jit(model, tokens, make_hooks, match):
    """Raise eagerly, and under jit when the hooks are built inside the traced function."""
    with pytest.raises(mj.InterventionError, match=match):
        mj.run(model, tokens, make_hooks())
    with pytest.raises(mj.InterventionError, match=match):
        jax.jit(lambda m, t: mj.run(m, t, make_hooks()).logits)(model, tokens)


# ------------------------------------------------- the three examples of the issue


def test_position_past_the_prompt_raises(smol, prompt):
    def hooks():
        return {RESID: mj.add(jnp.ones(D_MODEL), positions=[100])}

    match = (
        r"positions index 100 is out of range at site 'blocks\.0\.hook_resid_pre': "
        r"its 'pos' axis has size 14, so valid positions are \[-14, 14\)"
    )
    _raises_eager_and_jit(smol, prompt, hooks, match)


def test_head_past_n_heads_on_hook_z_raises(smol, prompt):
    def hooks():
        return {Z: mj.ablate("zero", heads=[20])}

    match = (
        r"heads index 20 is out of range at site 'blocks\.0\.attn\.hook_z': "
        r"its 'head' axis has size 9, so valid heads are \[0, 9\)"
    )
    _raises_eager_and_jit(smol, prompt, hooks, match)


def test_query_head_index_on_a_key_value_site_raises(smol, prompt):
    # hook_k has n_kv_heads (3) on its head axis: head 3 exists for hook_q, not for hook_k
    def hooks():
        return {K: mj.ablate("zero", heads=[3])}

    match = r"heads index 3 .* 'blocks\.0\.attn\.hook_k'.* size 3, so valid heads are \[0, 3\)"
    _raises_eager_and_jit(smol, prompt, hooks, match)
    with pytest.raises(
        mj.InterventionError, match=r"\[0, 3\) \(this site's head axis counts key/v"
    ):
        hooks()[K].apply(jnp.zeros((2, N_POS, N_KV, D_HEAD)), K)
    base = mj.run(smol, prompt, capture=[Q]).cache[Q]
    got = mj.run(smol, prompt, {Q: mj.ablate("zero", heads=[3])}, capture=[Q]).cache[Q]
    assert np.all(np.asarray(got)[:, :, 3] == 0)
    _close(np.delete(np.asarray(got), 3, axis=2), np.delete(np.asarray(base), 3, axis=2), 0)


# ------------------------------------------------------------ every constructor


def _double(w, x):
    return x * w


CONSTRUCTORS = {
    "patch": lambda **kw: mj.patch(jnp.ones(D_HEAD), **kw),
    "add": lambda **kw: mj.add(jnp.ones(D_HEAD), **kw),
    "scale": lambda **kw: mj.scale(2.0, **kw),
    "ablate_zero": lambda **kw: mj.ablate("zero", **kw),
    "ablate_mean": lambda **kw: mj.ablate("mean", **kw),
    "ablate_mean_value": lambda **kw: mj.ablate("mean", jnp.ones(D_HEAD), **kw),
    "ablate_mean_reference": lambda **kw: mj.ablate(
        "mean", reference=jnp.ones((5, N_POS, N_HEADS, D_HEAD)), **kw
    ),
    "ablate_resample": lambda **kw: mj.ablate("resample", key=jax.random.PRNGKey(0), **kw),
    "project": lambda **kw: mj.project(jnp.ones(D_HEAD), **kw),
    "apply_fn": lambda **kw: mj.apply_fn(_double, 2.0, **kw),
}
# [batch, pos, n_heads, d_head] activation at hook_z; distinct rows so every kind changes it
X = jax.random.normal(jax.random.PRNGKey(2), (3, N_POS, N_HEADS, D_HEAD))
BAD = [
    ({"positions": [N_POS]}, r"positions index 14 .* \[-14, 14\)"),
    ({"positions": [0, -N_POS - 1]}, r"positions index -15 .* \[-14, 14\)"),
    ({"heads": [N_HEADS]}, r"heads index 9 .* \[0, 9\)"),
    ({"heads": [-1]}, r"heads index -1 .* \[0, 9\)"),
    ({"positions": [3], "heads": [1, N_HEADS + 5]}, r"heads index 14 .* \[0, 9\)"),
]


def _apply(iv, x):
    return iv.apply(x, Z)


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
@pytest.mark.parametrize("kw,match", BAD, ids=["pos14", "pos-15", "head9", "head-1", "both"])
def test_every_constructor_refuses_out_of_range_indices(name, kw, match):
    iv = CONSTRUCTORS[name](**kw)
    with pytest.raises(mj.InterventionError, match=match):
        _apply(iv, X)
    with pytest.raises(mj.InterventionError, match=match):  # concrete inside a trace
        jax.jit(lambda x: _apply(iv, x))(X)
    # passed as an argument of jit, the indices are tracers: NaN everywhere, not a no-op
    assert np.isnan(np.asarray(jax.jit(_apply)(iv, X))).all()


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_every_constructor_accepts_the_edges_and_touches_only_them(name):
    iv = CONSTRUCTORS[name](positions=[N_POS - 1, -N_POS], heads=[0, N_HEADS - 1])
    got = np.asarray(_apply(iv, X))
    _close(jax.jit(_apply)(iv, X), got, 1e-6)
    sel = np.zeros((N_POS, N_HEADS), bool)
    sel[np.ix_([0, N_POS - 1], [0, N_HEADS - 1])] = True
    _close(got[:, ~sel], np.asarray(X)[:, ~sel], 0)
    if name != "ablate_resample":  # a permutation of 3 rows may leave some rows in place
        assert np.abs(got[:, sel] - np.asarray(X)[:, sel]).min() > 0


def test_negative_positions_count_from_the_end_up_to_minus_n(smol, prompt):
    cap = [RESID]
    v = jnp.full((D_MODEL,), 5.0)
    first = mj.run(smol, prompt, {RESID: mj.patch(v, positions=[0])}, capture=cap)
    edge = mj.run(smol, prompt, {RESID: mj.patch(v, positions=[-N_POS])}, capture=cap)
    _close(edge.cache[RESID], first.cache[RESID], 0)
    assert np.all(np.asarray(edge.cache[RESID])[:, 0] == 5.0)
    too_far = mj.patch(v, positions=[-N_POS - 1])
    with pytest.raises(mj.InterventionError, match=r"index -15 .* \[-14, 14\)"):
        mj.run(smol, prompt, {RESID: too_far})
    with pytest.raises(mj.InterventionError, match=r"\[-14, 14\) \(negative positions count"):
        too_far.apply(jnp.zeros((2, N_POS, D_MODEL)), RESID)


# ---------------------------------------------------------------- traced indices


def test_out_of_range_under_jit_with_hooks_as_arguments_is_nan(smol, prompt):
    run = jax.jit(mj.run)
    ok = run(smol, prompt, {RESID: mj.add(jnp.ones(D_MODEL), positions=[13])}).logits
    _close(ok, mj.run(smol, prompt, {RESID: mj.add(jnp.ones(D_MODEL), positions=[13])}).logits)
    assert np.isfinite(np.asarray(ok)).all()
    for hooks in (
        {RESID: mj.add(jnp.ones(D_MODEL), positions=[100])},
        {Z: mj.ablate("zero", heads=[20])},
        {K: mj.ablate("zero", heads=[3])},
    ):
        assert np.isnan(np.asarray(run(smol, prompt, hooks).logits)).all(), hooks


def test_vmap_sweep_over_positions_poisons_only_out_of_range_elements(smol, prompt):
    v = jnp.full((D_MODEL,), 3.0)

    def last_logits(pos):
        return mj.run(smol, prompt, {RESID: mj.patch(v, positions=pos)}).logits[:, -1]

    sweep = jnp.array([0, 13, 14, -14, -15, 100])
    got = np.asarray(jax.jit(jax.vmap(last_logits))(sweep))
    bad = np.array([False, False, True, False, True, True])
    assert np.isnan(got[bad]).all() and np.isfinite(got[~bad]).all()
    for i in np.flatnonzero(~bad):
        _close(got[i], last_logits(jnp.array([int(sweep[i])])), 1e-5)


def test_vmap_sweep_over_heads_poisons_only_out_of_range_elements():
    iv_of = jax.vmap(lambda h: _apply(mj.ablate("zero", heads=h), X))
    got = np.asarray(jax.jit(iv_of)(jnp.array([0, 8, 9, -1])))
    assert np.isnan(got[2:]).all() and np.isfinite(got[:2]).all()
    assert np.all(got[1][:, :, 8] == 0)


# ------------------------------------------------------------------- index rank


def test_index_arrays_of_rank_two_are_refused():
    with pytest.raises(mj.InterventionError, match=r"1-D array of indices, got shape \(2, 1\)"):
        mj.add(jnp.ones(D_HEAD), positions=[[1], [2]])
    with pytest.raises(mj.InterventionError, match=r"heads must be one index or a 1-D"):
        mj.ablate("zero", heads=np.zeros((1, 2), int))
    # built directly, bypassing the constructors: refused where it is applied
    with pytest.raises(mj.InterventionError, match=r"positions must be one index"):
        _apply(mj.Add(jnp.ones(D_HEAD), positions=jnp.array([[1, 2]])), X)
    with pytest.raises(mj.InterventionError, match="must be integers"):
        mj.add(jnp.ones(D_HEAD), positions=[1.0])


# --------------------------------------------------------------- mean ablation


MLP = "blocks.0.hook_mlp_out"


def test_mean_ablation_over_a_batch_of_one_raises(smol, prompt):
    match = r"mean ablation at site 'blocks\.0\.hook_mlp_out' over a batch of one.*reference="
    with pytest.raises(mj.InterventionError, match=match):
        mj.run(smol, prompt[:1], {MLP: mj.ablate("mean")})
    # the batch size is static, so this holds with the hooks traced too
    with pytest.raises(mj.InterventionError, match=match):
        jax.jit(mj.run)(smol, prompt[:1], {MLP: mj.ablate("mean", positions=[2])})


def test_resample_ablation_over_a_batch_of_one_raises():
    iv = mj.ablate("resample", key=jax.random.PRNGKey(0))
    with pytest.raises(mj.InterventionError, match=r"resample ablation .* batch of one.*value="):
        jax.jit(_apply)(iv, X[:1])


def test_mean_ablation_with_a_reference_is_the_reference_mean(smol, prompt):
    ref_tokens = jnp.asarray(np.random.RandomState(3).randint(0, 40, (4, N_POS)), jnp.int32)
    acts = np.asarray(mj.run(smol, ref_tokens, capture=[MLP]).cache[MLP], np.float64)
    hand_mean = acts.sum(0) / acts.shape[0]  # [pos, d_model]
    target = prompt[:1]
    base = np.asarray(mj.run(smol, target, capture=[MLP]).cache[MLP])
    got = jax.jit(mj.run, static_argnames="capture")(
        smol, target, {MLP: mj.ablate("mean", reference=acts)}, capture=(MLP,)
    )
    _close(got.cache[MLP][0], hand_mean, 1e-6)
    _close(got.logits, mj.run(smol, target, {MLP: mj.patch(hand_mean)}).logits, 1e-5)
    assert np.abs(hand_mean - base[0]).max() > 1e-2  # the replacement is not the identity
    at2 = mj.run(smol, target, {MLP: mj.ablate("mean", reference=acts, positions=[2])}, [MLP])
    expect = base.copy()
    expect[:, 2] = hand_mean[2]
    _close(at2.cache[MLP], expect, 1e-6)


def test_mean_ablation_reference_must_have_a_batch_axis(smol, prompt):
    with pytest.raises(mj.InterventionError, match=r"reference .* shape \(14, 16\).*value="):
        mj.run(smol, prompt, {MLP: mj.ablate("mean", reference=jnp.zeros((N_POS, D_MODEL)))})
    with pytest.raises(mj.InterventionError, match="reference= is for ablate"):
        mj.ablate("zero", reference=jnp.zeros((2, N_POS, D_MODEL)))
    with pytest.raises(mj.InterventionError, match="pass one of them"):
        mj.ablate("mean", jnp.zeros(D_MODEL), reference=jnp.zeros((2, N_POS, D_MODEL)))


def test_mean_ablation_over_a_batch_above_one_is_the_batch_mean(smol, prompt):
    base = np.asarray(mj.run(smol, prompt, capture=[MLP]).cache[MLP], np.float64)
    got = mj.run(smol, prompt, {MLP: mj.ablate("mean")}, capture=[MLP]).cache[MLP]
    _close(got, np.broadcast_to(base.sum(0) / base.shape[0], base.shape), 1e-6)


def test_vmap_over_mean_ablation_references():
    refs = jax.random.normal(jax.random.PRNGKey(4), (3, 5, N_POS, N_HEADS, D_HEAD))
    got = jax.jit(jax.vmap(lambda r: _apply(mj.ablate("mean", reference=r), X[:1])))(refs)
    _close(got[:, 0], refs.mean(1), 1e-6)
