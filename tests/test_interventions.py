"""Property and oracle tests of the intervention machinery on a tiny random Llama."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import jrun, max_diff

import mechjax as mj

L1 = "blocks.1.hook_resid_pre"


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), atol=tol, rtol=0, err_msg=max_diff(a, b)
    )


# ----------------------------------------------------------------------------- oracle


def oracle_forward(params, tokens, cfg, resid_patch=None, z_patch=None):
    """A hand-written numpy Llama forward with two hand-written patch points.

    resid_patch: (layer, position, value[d_model]) replaces resid_pre there.
    z_patch: (layer, head, value[pos, d_head]) replaces that head's z.
    Written independently of mechjax's forward: repeat_kv, explicit loops, numpy.
    """
    p = jax.tree.map(np.asarray, params)
    x = p["embed"]["W_E"][np.asarray(tokens)].astype(np.float64)
    B, P = tokens.shape
    pos = np.arange(P)
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, cfg.d_head, 2) / cfg.d_head))
    ang = pos[:, None] * inv[None]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def rms(v, w):
        return v / np.sqrt((v**2).mean(-1, keepdims=True) + cfg.eps) * w

    def rope(q):  # q [B, P, H, D]
        h = cfg.d_head // 2
        rot = np.concatenate([-q[..., h:], q[..., :h]], -1)
        return q * cos[None, :, None] + rot * sin[None, :, None]

    rep = cfg.n_heads // cfg.n_kv_heads
    for l, blk in enumerate(p["blocks"]):
        if resid_patch is not None and resid_patch[0] == l:
            x = x.copy()
            x[:, resid_patch[1]] = resid_patch[2]
        a = blk["attn"]
        h_in = rms(x, blk["ln1"]["w"])
        q = rope(np.einsum("bpm,hmd->bphd", h_in, a["W_Q"]))
        k = rope(np.einsum("bpm,hmd->bphd", h_in, a["W_K"]))
        v = np.einsum("bpm,hmd->bphd", h_in, a["W_V"])
        k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
        s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(cfg.d_head)
        s = np.where(np.tril(np.ones((P, P), bool)), s, -np.inf)
        pat = np.exp(s - s.max(-1, keepdims=True))
        pat /= pat.sum(-1, keepdims=True)
        z = np.einsum("bhqk,bkhd->bqhd", pat, v)
        if z_patch is not None and z_patch[0] == l:
            z = z.copy()
            z[:, :, z_patch[1]] = z_patch[2]
        x = x + np.einsum("bphd,hdm->bpm", z, a["W_O"])
        m = blk["mlp"]
        h2 = rms(x, blk["ln2"]["w"])
        g = h2 @ m["W_gate"]
        x = x + ((g / (1 + np.exp(-g))) * (h2 @ m["W_in"])) @ m["W_out"]
    return rms(x, p["ln_final"]["w"]) @ p["unembed"]["W_U"]


def test_oracle_matches_plain_forward(tiny_llama, tokens):
    _close(
        jrun(tiny_llama, tokens).logits,
        oracle_forward(tiny_llama.params, tokens, tiny_llama.config),
        1e-4,
    )


def test_resid_patch_at_position_equals_oracle(tiny_llama, tokens):
    value = jnp.linspace(-2, 2, tiny_llama.config.d_model)
    out = jrun(tiny_llama, tokens, hooks={L1: mj.patch(value, positions=[3])}).logits
    ref = oracle_forward(
        tiny_llama.params, tokens, tiny_llama.config, resid_patch=(1, 3, np.asarray(value))
    )
    _close(out, ref, 1e-4)
    assert np.abs(np.asarray(out) - np.asarray(jrun(tiny_llama, tokens).logits)).max() > 1e-2


def test_head_patch_equals_oracle(tiny_llama, tokens):
    value = jnp.ones((tokens.shape[1], tiny_llama.config.d_head)) * 0.7
    out = jrun(
        tiny_llama, tokens, hooks={"blocks.0.attn.hook_z": mj.patch(value, heads=[2])}
    ).logits
    ref = oracle_forward(
        tiny_llama.params, tokens, tiny_llama.config, z_patch=(0, 2, np.asarray(value))
    )
    _close(out, ref, 1e-4)


# ------------------------------------------------------------------------ no-op laws


def test_empty_hooks_and_identity_interventions_change_nothing(tiny_llama, tokens):
    base = jrun(tiny_llama, tokens).logits
    _close(jrun(tiny_llama, tokens, hooks={}).logits, base, 0)
    d = tiny_llama.config.d_model
    hooks = {
        L1: [mj.add(jnp.zeros(d)), mj.scale(jnp.ones(()))],
        "blocks.0.attn.hook_pattern": mj.scale(jnp.ones(())),
        "blocks.1.mlp.hook_post": mj.add(jnp.zeros(tiny_llama.config.d_mlp)),
    }
    # bit-equal eagerly; under jit XLA may fuse x*1+0 differently: one float32 ulp
    _close(jrun(tiny_llama, tokens, hooks=hooks).logits, base, 1e-5)


def test_patching_own_activations_is_a_noop(tiny_llama, tokens):
    # every site at once (one compile); a misplaced patch anywhere would change the logits
    sites = [s for s in tiny_llama.sites if not s.endswith("_input")]
    clean = jrun(tiny_llama, tokens, capture=sites)
    out = jrun(tiny_llama, tokens, hooks={s: mj.patch(clean.cache[s]) for s in sites})
    _close(out.logits, clean.logits, 1e-5)
    shifted = jrun(tiny_llama, tokens, hooks={s: mj.patch(clean.cache[s][::-1]) for s in sites[:2]})
    assert np.abs(np.asarray(shifted.logits - clean.logits)).max() > 1e-2  # the check can fail


def test_split_qkv_inputs_patched_with_own_values_are_a_noop(tiny_llama, tokens):
    sites = [f"blocks.1.hook_{s}_input" for s in "qkv"]
    clean = jrun(tiny_llama, tokens, capture=sites)
    assert clean.cache[sites[0]].shape == (*tokens.shape, 4, 32)
    assert clean.cache[sites[1]].shape == (*tokens.shape, 2, 32)
    out = jrun(tiny_llama, tokens, hooks={s: mj.patch(clean.cache[s]) for s in sites})
    _close(out.logits, clean.logits, 1e-5)


def test_split_input_of_one_head_changes_only_through_that_head(tiny_llama, tokens):
    site = "blocks.0.hook_q_input"
    cap = ["blocks.0.attn.hook_z"]
    base = jrun(tiny_llama, tokens, capture=cap).cache[cap[0]]
    out = jrun(
        tiny_llama, tokens, hooks={site: mj.add(jnp.ones(32), heads=[1])}, capture=cap
    ).cache[cap[0]]
    changed = np.abs(np.asarray(out - base)).max(axis=(0, 1, 3))
    assert changed[1] > 1e-1 and np.all(changed[[0, 2, 3]] < 1e-5), changed


def test_per_head_result_sums_to_attn_out(tiny_llama, tokens):
    c = jrun(
        tiny_llama, tokens, capture=["blocks.1.attn.hook_result", "blocks.1.hook_attn_out"]
    ).cache
    _close(c["blocks.1.attn.hook_result"].sum(2), c["blocks.1.hook_attn_out"], 1e-5)


# ------------------------------------------------------------------------- transforms


def test_jit_equals_no_jit(tiny_llama, tokens):
    hooks = {
        L1: mj.add(jnp.full((32,), 0.3), positions=[-1]),
        "blocks.0.attn.hook_z": mj.ablate("zero", heads=[0]),
    }
    eager = mj.run(tiny_llama, tokens, hooks=hooks, capture=["blocks.1.hook_resid_post"])
    jitted = jax.jit(mj.run, static_argnames="capture")(
        tiny_llama, tokens, hooks, capture=("blocks.1.hook_resid_post",)
    )
    # XLA fuses differently under jit: float32 rounding only (logits are O(10) here)
    _close(jitted.logits, eager.logits, 1e-4)
    _close(jitted.cache["blocks.1.hook_resid_post"], eager.cache["blocks.1.hook_resid_post"], 1e-4)


def test_vmap_over_patch_values_equals_loop(tiny_llama, tokens):
    values = jax.random.normal(jax.random.PRNGKey(1), (8, 32))

    def logits_for(v):
        return jrun(tiny_llama, tokens, hooks={L1: mj.patch(v, positions=[2])}).logits

    batched = jax.jit(jax.vmap(logits_for))(values)
    for i in range(8):
        _close(batched[i], logits_for(values[i]), 1e-4)


def test_vmap_over_positions_equals_loop(tiny_llama, tokens):
    clean = jrun(tiny_llama, tokens[::-1], capture=[L1]).cache[L1]

    def f(pos):
        return jrun(tiny_llama, tokens, hooks={L1: mj.patch(clean, positions=pos)}).logits[:, -1]

    batched = jax.vmap(f)(jnp.arange(tokens.shape[1]))
    for p in range(tokens.shape[1]):
        _close(batched[p], f(jnp.array([p])), 1e-5)


def test_vmap_over_prompts(tiny_llama, tokens):
    per_prompt = jax.vmap(lambda t: jrun(tiny_llama, t[None]).logits[0])(tokens)
    _close(per_prompt, jrun(tiny_llama, tokens).logits, 1e-5)


def test_grad_wrt_additive_delta_matches_finite_differences(tiny_llama, tokens):
    jax.config.update("jax_enable_x64", True)
    try:
        model64 = mj.Model(
            jax.tree.map(lambda x: x.astype(jnp.float64), tiny_llama.params),
            tiny_llama.config,
            tiny_llama.family,
        )

        @jax.jit
        def metric64(delta):
            logits = jrun(model64, tokens, hooks={L1: mj.add(delta)}).logits
            return logits[:, -1, 3].sum() - logits[:, -1, 5].sum()

        zero = jnp.zeros((tokens.shape[1], 32), jnp.float64)
        g = jax.jit(jax.grad(metric64))(zero)
        rng = np.random.RandomState(0)
        for _ in range(5):
            i, j = rng.randint(tokens.shape[1]), rng.randint(32)
            e = zero.at[i, j].set(1e-5)
            fd = (metric64(e) - metric64(-e)) / 2e-5
            assert abs(float(g[i, j]) - float(fd)) < 1e-6 * max(1.0, abs(float(fd))), (
                i,
                j,
                g[i, j],
                fd,
            )
        assert float(jnp.abs(g).max()) > 1e-3
    finally:
        jax.config.update("jax_enable_x64", False)


def test_grad_through_parametrised_function(tiny_llama, tokens):
    def fn(w, x):
        return x @ w

    def loss(w):
        return jrun(tiny_llama, tokens, hooks={L1: mj.apply_fn(fn, w)}).logits[:, -1, 0].sum()

    eye = jnp.eye(32)
    _close(
        jrun(tiny_llama, tokens, hooks={L1: mj.apply_fn(fn, eye)}).logits,
        jrun(tiny_llama, tokens).logits,
        1e-5,
    )
    g = jax.grad(loss)(eye)
    assert g.shape == (32, 32) and float(jnp.abs(g).max()) > 0


# ------------------------------------------------------------------------ algebra


def test_positions_restrict_the_patch(tiny_llama, tokens):
    cap = [L1]
    out = jrun(
        tiny_llama, tokens, hooks={L1: mj.patch(jnp.zeros(32), positions=[1, -1])}, capture=cap
    )
    base = jrun(tiny_llama, tokens, capture=cap).cache[L1]
    got = np.asarray(out.cache[L1])
    assert np.all(got[:, [1, 6]] == 0)
    _close(got[:, [0, 2, 3, 4, 5]], np.asarray(base)[:, [0, 2, 3, 4, 5]], 0)


def test_interventions_compose_in_order(tiny_llama, tokens):
    cap = [L1]
    out = jrun(
        tiny_llama,
        tokens,
        hooks={L1: [mj.patch(jnp.ones(32)), mj.scale(3.0), mj.add(jnp.ones(32))]},
        capture=cap,
    )
    _close(out.cache[L1], jnp.full((3, 7, 32), 4.0), 0)


def test_project_out_and_onto_sum_to_identity(tiny_llama, tokens):
    dirs = jax.random.normal(jax.random.PRNGKey(3), (3, 32))
    base = jrun(tiny_llama, tokens, capture=[L1]).cache[L1]
    out_ = jrun(tiny_llama, tokens, hooks={L1: mj.project(dirs, "out")}, capture=[L1]).cache[L1]
    onto = jrun(tiny_llama, tokens, hooks={L1: mj.project(dirs, "onto")}, capture=[L1]).cache[L1]
    _close(out_ + onto, base, 1e-5)
    _close(out_ @ dirs.T, jnp.zeros((3, 7, 3)), 1e-4)
    u = dirs[0] / jnp.linalg.norm(dirs[0])
    setv = jrun(
        tiny_llama, tokens, hooks={L1: mj.project(u, "set", coeffs=2.5)}, capture=[L1]
    ).cache[L1]
    _close(setv @ u, jnp.full((3, 7), 2.5), 1e-4)


def test_ablations(tiny_llama, tokens):
    site = "blocks.0.hook_mlp_out"
    base = jrun(tiny_llama, tokens, capture=[site]).cache[site]
    mean = jrun(tiny_llama, tokens, hooks={site: mj.ablate("mean")}, capture=[site]).cache[site]
    _close(mean, jnp.broadcast_to(base.mean(0), base.shape), 1e-6)
    key = jax.random.PRNGKey(0)
    res = jrun(
        tiny_llama, tokens, hooks={site: mj.ablate("resample", key=key)}, capture=[site]
    ).cache[site]
    _close(res, base[jax.random.permutation(key, 3)], 0)
    zero = jrun(
        tiny_llama, tokens, hooks={site: mj.ablate("zero", positions=[0])}, capture=[site]
    ).cache[site]
    assert np.all(np.asarray(zero)[:, 0] == 0) and np.any(np.asarray(zero)[:, 1] != 0)


# ------------------------------------------------------------------------ bad input


def test_unknown_site_suggests_close_names(tiny_llama, tokens):
    with pytest.raises(mj.SiteError, match="blocks.1.hook_resid_pre"):
        mj.run(tiny_llama, tokens, hooks={"blocks.1.hook_resid_pree": mj.add(jnp.zeros(32))})
    with pytest.raises(mj.SiteError, match="capture site"):
        mj.run(tiny_llama, tokens, capture=["blocks.9.hook_resid_pre"])


def test_wrong_patch_shape_names_site_and_shapes(tiny_llama, tokens):
    with pytest.raises(
        mj.InterventionError, match=r"blocks\.1\.hook_resid_pre.*\(3, 5, 32\).*\(3, 7, 32\)"
    ):
        mj.run(tiny_llama, tokens, hooks={L1: mj.patch(jnp.zeros((3, 5, 32)))})


def test_heads_on_a_site_without_heads(tiny_llama, tokens):
    with pytest.raises(mj.InterventionError, match="no head axis"):
        mj.run(tiny_llama, tokens, hooks={L1: mj.add(jnp.zeros(32), heads=[0])})


def test_token_outside_vocabulary(tiny_llama):
    with pytest.raises(mj.InputError, match="outside the vocabulary"):
        mj.run(tiny_llama, jnp.array([[1, 2, 50]]))
    with pytest.raises(mj.InputError, match=r"\[batch, pos\]"):
        mj.run(tiny_llama, jnp.array([1, 2, 3]))
    # under jit ids cannot be checked on the host: they give NaN, never a wrong number
    logits = jax.jit(mj.run)(tiny_llama, jnp.array([[1, 2, 50]])).logits
    assert np.isnan(np.asarray(logits)[0, 2]).all()


def test_split_input_with_ln1_site_is_refused(tiny_llama, tokens):
    with pytest.raises(mj.SiteError, match="not computed"):
        mj.run(tiny_llama, tokens, capture=["blocks.0.hook_q_input", "blocks.0.ln1.hook_scale"])


def test_non_intervention_value_is_refused(tiny_llama, tokens):
    with pytest.raises(mj.InterventionError, match="not an intervention"):
        mj.run(tiny_llama, tokens, hooks={L1: jnp.zeros(32)})
