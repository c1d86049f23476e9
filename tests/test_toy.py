"""models/toy.py: shapes, site list, causality, per-head results, init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mechjax as mj
from mechjax.hooks import HookContext
from mechjax.io.families import family_of_module
from mechjax.models import toy

CFG = toy.ToyConfig(n_layers=2, d_model=16, n_heads=3, d_head=5, d_vocab=23, n_ctx=12, d_mlp=20)
ATTN_ONLY = toy.ToyConfig(
    n_layers=2,
    d_model=16,
    n_heads=2,
    d_head=8,
    d_vocab=23,
    n_ctx=12,
    d_mlp=None,
    normalization=None,
)


# jit once per config: eager op-by-op dispatch compiles every primitive separately
_init = jax.jit(toy.init, static_argnums=1)
_forward = jax.jit(toy.forward, static_argnums=2)


def _capture(params, tokens, cfg, names):
    """(visited site names, cache) of one jit-compiled forward capturing `names`."""
    visited = []

    def f(p, t):
        ctx = HookContext({}, capture=names)
        toy.forward(p, t, cfg, hook=ctx)
        visited.extend(ctx.visited)
        return ctx.cache

    cache = jax.jit(f)(params, tokens)
    return visited, cache


def _tokens(seed=0, shape=(2, 9)):
    return jnp.asarray(np.random.RandomState(seed).randint(0, 23, shape), jnp.int32)


def _params(cfg, seed=0):
    p = _init(jax.random.PRNGKey(seed), cfg)
    # non-zero biases, so a dropped bias shows up in the tests
    for i, b in enumerate(p["blocks"]):
        for name in ("b_Q", "b_K", "b_V", "b_O"):
            key = jax.random.PRNGKey(100 + i)
            b["attn"][name] = 0.1 * jax.random.normal(key, b["attn"][name].shape)
    return p


def test_param_names_and_shapes():
    p = _init(jax.random.PRNGKey(0), CFG)
    assert p["embed"]["W_E"].shape == (23, 16)
    assert p["pos_embed"]["W_pos"].shape == (12, 16)
    a = p["blocks"][1]["attn"]
    assert a["W_Q"].shape == a["W_K"].shape == a["W_V"].shape == (3, 16, 5)
    assert a["W_O"].shape == (3, 5, 16)
    assert a["b_Q"].shape == (3, 5) and a["b_O"].shape == (16,)
    assert p["blocks"][0]["mlp"]["W_in"].shape == (16, 20)
    assert p["blocks"][0]["mlp"]["W_out"].shape == (20, 16)
    assert p["blocks"][0]["ln1"]["w"].shape == (16,) and "ln_final" in p
    assert p["unembed"]["W_U"].shape == (16, 23) and p["unembed"]["b_U"].shape == (23,)
    q = _init(jax.random.PRNGKey(0), ATTN_ONLY)
    assert "mlp" not in q["blocks"][0] and "ln1" not in q["blocks"][0] and "ln_final" not in q
    assert _forward(p, _tokens(), CFG).shape == (2, 9, 23)


@pytest.mark.parametrize("cfg", [CFG, ATTN_ONLY], ids=["mlp_ln", "attn_only"])
def test_site_list_is_the_visiting_order_with_shapes(cfg):
    names = toy.site_names(cfg)
    visited, cache = _capture(_params(cfg), _tokens(), cfg, names)
    assert visited == names
    b, p, h, dh, d = 2, 9, cfg.n_heads, cfg.d_head, cfg.d_model
    assert cache["blocks.1.attn.hook_q"].shape == (b, p, h, dh)
    assert cache["blocks.0.attn.hook_z"].shape == (b, p, h, dh)
    assert cache["blocks.0.attn.hook_pattern"].shape == (b, h, p, p)
    assert cache["blocks.0.attn.hook_attn_scores"].shape == (b, h, p, p)
    assert cache["blocks.1.attn.hook_result"].shape == (b, p, h, d)
    assert cache["blocks.1.hook_resid_post"].shape == (b, p, d)


def test_site_list_golden():
    assert toy.site_names(ATTN_ONLY)[:12] == [
        "hook_embed",
        "hook_pos_embed",
        "blocks.0.hook_resid_pre",
        "blocks.0.attn.hook_q",
        "blocks.0.attn.hook_k",
        "blocks.0.attn.hook_v",
        "blocks.0.attn.hook_attn_scores",
        "blocks.0.attn.hook_pattern",
        "blocks.0.attn.hook_z",
        "blocks.0.attn.hook_result",
        "blocks.0.hook_attn_out",
        "blocks.0.hook_resid_post",
    ]
    full = toy.site_names(CFG)
    for name in (
        "blocks.1.hook_resid_mid",
        "blocks.1.ln2.hook_scale",
        "blocks.1.mlp.hook_pre",
        "blocks.1.mlp.hook_post",
        "blocks.1.hook_mlp_out",
        "ln_final.hook_normalized",
    ):
        assert name in full
    assert len(full) == 2 + 2 * 18 + 2
    assert len(toy.site_names(ATTN_ONLY)) == 2 + 2 * 10


def test_per_head_result_only_when_asked():
    visited, _ = _capture(_params(CFG), _tokens(), CFG, ["blocks.0.hook_attn_out"])
    assert "blocks.0.attn.hook_result" not in visited and "blocks.0.hook_attn_out" in visited


@pytest.mark.parametrize("cfg", [CFG, ATTN_ONLY], ids=["mlp_ln", "attn_only"])
def test_causal(cfg):
    p = _params(cfg)
    a = _tokens(1)
    b = a.at[:, 6].set((a[:, 6] + 5) % 23)
    la, lb = _forward(p, a, cfg), _forward(p, b, cfg)
    np.testing.assert_array_equal(np.asarray(la[:, :6]), np.asarray(lb[:, :6]))
    assert np.abs(np.asarray(la[:, 6:] - lb[:, 6:])).max() > 1e-3


@pytest.mark.parametrize("cfg", [CFG, ATTN_ONLY], ids=["mlp_ln", "attn_only"])
def test_head_results_sum_to_attn_out(cfg):
    p = _params(cfg)
    sites = [f"blocks.{l}.{s}" for l in range(2) for s in ("attn.hook_result", "hook_attn_out")]
    _, cache = _capture(p, _tokens(), cfg, sites)
    for l in range(2):
        summed = cache[f"blocks.{l}.attn.hook_result"].sum(2) + p["blocks"][l]["attn"]["b_O"]
        out = cache[f"blocks.{l}.hook_attn_out"]
        d = np.abs(np.asarray(summed - out))
        assert d.max() < 1e-5, f"max |diff| = {d.max():.3g}, mean |diff| = {d.mean():.3g}"


def test_attention_only_forward_matches_hand_computation():
    """One layer written out with numpy: embeddings, causal softmax, per-head OV, unembed."""
    cfg = toy.ToyConfig(
        n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=11, n_ctx=6, normalization=None
    )
    p = _init(jax.random.PRNGKey(3), cfg)
    tok = np.array([[3, 1, 4, 1, 5]])
    P = jax.tree_util.tree_map(np.asarray, p)
    x = P["embed"]["W_E"][tok[0]] + P["pos_embed"]["W_pos"][:5]
    a = P["blocks"][0]["attn"]
    out = np.zeros_like(x)
    for h in range(2):
        q, k, v = x @ a["W_Q"][h], x @ a["W_K"][h], x @ a["W_V"][h]
        s = q @ k.T / 2.0
        s[np.triu_indices(5, 1)] = -np.inf
        w = np.exp(s - s.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        out += w @ v @ a["W_O"][h]
    logits = (x + out) @ P["unembed"]["W_U"]
    got = np.asarray(_forward(p, jnp.asarray(tok), cfg))[0]
    np.testing.assert_allclose(got, logits, rtol=1e-4, atol=1e-5)


def test_init_deterministic_per_key():
    a = _init(jax.random.PRNGKey(5), CFG)
    b = toy.init(jax.random.PRNGKey(5), CFG)  # eager and jit-compiled agree too
    c = _init(jax.random.PRNGKey(6), CFG)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=0)
    assert not np.array_equal(
        np.asarray(a["blocks"][0]["attn"]["W_Q"]), np.asarray(c["blocks"][0]["attn"]["W_Q"])
    )
    assert not np.array_equal(
        np.asarray(a["blocks"][0]["attn"]["W_Q"]), np.asarray(a["blocks"][0]["attn"]["W_K"])
    )


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="1 to 4 layers"):
        toy.ToyConfig(n_layers=5, d_model=8, n_heads=1, d_head=8, d_vocab=5, n_ctx=4)
    with pytest.raises(ValueError, match="normalization"):
        toy.ToyConfig(
            n_layers=1, d_model=8, n_heads=1, d_head=8, d_vocab=5, n_ctx=4, normalization="RMS"
        )
    with pytest.raises(mj.InputError, match="n_ctx"):
        toy.forward(_init(jax.random.PRNGKey(0), CFG), _tokens(shape=(1, 13)), CFG)


def test_runs_through_mj_run_with_interventions():
    model = mj.Model(_params(ATTN_ONLY), ATTN_ONLY, family_of_module("toy"))
    tokens = _tokens()
    run = jax.jit(mj.run, static_argnames="capture")
    out = run(model, tokens, capture=("blocks.1.hook_resid_post",))
    np.testing.assert_allclose(
        np.asarray(out.logits), np.asarray(_forward(model.params, tokens, ATTN_ONLY)), atol=1e-5
    )
    assert out.cache["blocks.1.hook_resid_post"].shape == (2, 9, 16)
    zero_pattern = run(model, tokens, {"blocks.1.attn.hook_z": mj.scale(0.0)})
    assert np.abs(np.asarray(zero_pattern.logits - out.logits)).max() > 1e-4
