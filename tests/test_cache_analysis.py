"""Cache analysis: decompositions add up, DLA sums to the logit, the logit lens ends at the logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff

import mechjax as mj
from mechjax import cache_analysis as ca
from mechjax.io.families import family_of_module
from mechjax.models import neox

TOL = 1e-4


def _close(a, b, tol=TOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.abs(a - b).max() <= tol, max_diff(a, b)


def _analyse(model, tokens):
    """A run and every analysis the tests check, in one compiled program (eager JAX
    compiles each operation on its own, which is slower)."""
    logits, cache = mj.run_with_cache(model, tokens)
    target = jnp.roll(tokens, -1, axis=1)  # explain the next token's logit
    wrong = (target + 7) % model.config.d_vocab
    stack = ca.components(cache, model)
    heads = ca.stack_head_results(cache, model)
    mlp = ca.decompose_resid(cache, model, mode="mlp")
    b_out = model.params["blocks"][1]["mlp"].get("b_out")
    b_out_piece = jnp.broadcast_to(
        0.0 if b_out is None else b_out, tokens.shape + (model.config.d_model,)
    )[None]
    r = {
        "cache": cache,
        "logits": logits,
        "decomposed": ca.decompose_resid(cache, model).values,
        "decomposed_to_1": ca.decompose_resid(cache, model, layer=1).values,
        "components": stack.values,
        "components_no_heads": ca.components(cache, model, heads=False).values,
        "heads": heads.values,
        "accumulated": ca.accumulated_resid(cache, model).values,
        "lens": ca.logit_lens(cache, model).values,
        "lens_frozen": ca.logit_lens(cache, model, frozen_scale=True).values,
        "frozen_normed": ca.apply_final_norm(
            ca.decompose_resid(cache, model).values, model, ca.final_scale(cache)
        ),
        "head_attr": ca.head_attribution(cache, model, target),
        "head_rows": ca.logit_attribution(heads, model, cache, target, include_bias=False).values,
        "neuron_attr": ca.neuron_attribution(cache, model, 1, target),
        "mlp_attr": ca.logit_attribution(mlp, model, cache, target, include_bias=False).values,
        "b_out_attr": ca.logit_attribution(
            b_out_piece, model, cache, target, include_bias=False
        ).values,
        "few_neurons": ca.stack_neuron_results(cache, model, 1, neurons=[0, 5]).values,
        "patterns": ca.stack_attention_patterns(cache, model).values,
    }
    for centered in (False, True):
        key = "centered" if centered else "plain"
        picked = jnp.take_along_axis(logits, target[..., None], -1)[..., 0]
        other = jnp.take_along_axis(logits, wrong[..., None], -1)[..., 0]
        if centered:
            picked, other = picked - logits.mean(-1), other - logits.mean(-1)
        r[f"dla_{key}"] = ca.logit_attribution(
            stack, model, cache, target, centered=centered
        ).values
        r[f"dla_diff_{key}"] = ca.logit_attribution(
            stack, model, cache, target, wrong, centered=centered
        ).values
        r[f"logit_{key}"], r[f"logit_diff_{key}"] = picked, picked - other
    return r


_analyse_jit = jax.jit(_analyse)


@pytest.fixture(scope="module", params=["llama", "neox"])
def case(request, tiny_llama, tokens):
    """(model, tokens, cache, results) for an RMSNorm Llama and a LayerNorm, biased,
    parallel-residual GPT-NeoX."""
    if request.param == "llama":
        model = tiny_llama
    else:
        cfg = neox.Config(
            d_model=32,
            n_layers=2,
            n_heads=4,
            d_head=8,
            d_mlp=48,
            d_vocab=50,
            n_ctx=64,
            rotary_dim=4,
        )
        model = mj.Model(
            neox.init(jax.random.PRNGKey(2), cfg, scale=0.3), cfg, family_of_module("neox")
        )
    r = _analyse_jit(model, tokens)
    return model, tokens, r["cache"], r


def _final(cache, model):
    return cache[f"blocks.{model.config.n_layers - 1}.hook_resid_post"]


def test_decomposed_resid_sums_to_the_stream(case):
    model, _, cache, r = case
    assert ca.decompose_resid(cache, model).labels == [
        "embed",
        "0_attn_out",
        "0_mlp_out",
        "1_attn_out",
        "1_mlp_out",
    ]
    _close(r["decomposed"].sum(0), _final(cache, model))
    _close(r["decomposed_to_1"].sum(0), cache["blocks.1.hook_resid_pre"])
    assert ca.decompose_resid(cache, model, mode="mlp").labels == [
        "embed",
        "0_mlp_out",
        "1_mlp_out",
    ]


def test_components_with_heads_sum_to_the_stream(case):
    model, _, cache, r = case
    _close(r["components"].sum(0), _final(cache, model))
    _close(r["components_no_heads"].sum(0), _final(cache, model))
    labels = ca.components(cache, model).labels
    n_heads = model.config.n_heads
    assert labels[1:3] == ["L0H0", "L0H1"]
    assert len(labels) == 1 + 2 * (n_heads + 1) + 2 * ("b_O" in model.params["blocks"][0]["attn"])


def test_stack_head_results_add_up_to_attn_out(case):
    model, _, cache, r = case
    n_heads = model.config.n_heads
    labels = ca.stack_head_results(cache, model).labels
    assert len(labels) == 2 * n_heads and labels[n_heads] == "L1H0"
    b_O = model.params["blocks"][1]["attn"].get("b_O", 0.0)
    _close(r["heads"][n_heads:].sum(0) + b_O, cache["blocks.1.hook_attn_out"])


def test_accumulated_resid_and_logit_lens(case):
    model, _, cache, r = case
    logits = r["logits"]
    assert ca.accumulated_resid(cache, model).labels == ["0_pre", "1_pre", "final_post"]
    _close(r["accumulated"][1], cache["blocks.1.hook_resid_pre"])
    assert ca.accumulated_resid(cache, model, layer=1).labels == ["0_pre", "1_pre"]
    assert r["lens"].shape == (3,) + logits.shape
    _close(r["lens"][-1], logits)
    _close(r["lens_frozen"][-1], logits)
    assert np.abs(np.asarray(r["lens"][0] - logits)).max() > 1e-2  # early layers differ


def test_frozen_final_norm_is_additive(case):
    model, _, cache, r = case
    ln = model.params["ln_final"]
    _close(r["frozen_normed"].sum(0), cache["ln_final.hook_normalized"] * ln["w"])


@pytest.mark.parametrize("centered", [False, True])
def test_dla_of_components_sums_to_the_logit(case, centered):
    model, tokens, cache, r = case
    key = "centered" if centered else "plain"
    dla = r[f"dla_{key}"]
    assert dla.shape == (len(ca.components(cache, model).labels) + 1,) + tokens.shape
    _close(dla.sum(0), r[f"logit_{key}"])
    _close(r[f"dla_diff_{key}"].sum(0), r[f"logit_diff_{key}"])


def test_head_and_neuron_attribution_agree_with_the_stack(case):
    model, tokens, cache, r = case
    cfg = model.config
    assert r["head_attr"].shape == (cfg.n_layers, cfg.n_heads) + tokens.shape
    _close(r["head_attr"].reshape(r["head_rows"].shape), r["head_rows"])
    assert r["neuron_attr"].shape == tokens.shape + (cfg.d_mlp,)
    _close(r["neuron_attr"].sum(-1) + r["b_out_attr"][0], r["mlp_attr"][-1])
    post, W_out = cache["blocks.1.mlp.hook_post"], model.params["blocks"][1]["mlp"]["W_out"]
    _close(r["few_neurons"][1], np.asarray(post)[..., 5:6] * np.asarray(W_out)[5])


def test_attention_patterns_per_head(case):
    model, tokens, cache, r = case
    s = r["patterns"]
    b, p = tokens.shape
    n_heads = model.config.n_heads
    assert s.shape == (2 * n_heads, b, p, p)
    assert ca.stack_attention_patterns(cache, model).labels[n_heads + 2] == "L1H2"
    _close(s[n_heads + 2], cache["blocks.1.attn.hook_pattern"][:, 2])
    _close(s.sum(-1), np.ones(s.shape[:-1]), 1e-5)


def test_missing_site_and_bad_arguments(case):
    model, _, cache, _ = case
    partial = {k: v for k, v in cache.items() if "hook_z" not in k}
    with pytest.raises(mj.SiteError, match="hook_z"):
        ca.stack_head_results(partial, model)
    with pytest.raises(mj.InputError, match="mode"):
        ca.decompose_resid(cache, model, mode="heads")
    with pytest.raises(mj.InputError, match="layer=9"):
        ca.accumulated_resid(cache, model, layer=9)


def test_gemma_final_norm_gain_is_one_plus_w():
    """Gemma stores norm gains as offsets from 1: the logit lens's last entry and the
    frozen-scale decomposition must use 1 + w (with w it gave wrong logits)."""
    from mechjax.models import gemma3

    cfg = gemma3.Config(
        d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=48, d_vocab=50, n_ctx=64
    )
    p = gemma3.init(jax.random.PRNGKey(3), cfg, scale=0.3)
    p["ln_final"]["w"] = p["ln_final"]["w"] + 0.5  # a gain far from 1 + 0
    model = mj.Model(p, cfg, family_of_module("gemma3"))
    toks = jnp.asarray(np.random.RandomState(0).randint(0, 50, (2, 6)), jnp.int32)
    logits, cache = mj.run_with_cache(model, toks)
    _close(ca.logit_lens(cache, model).values[-1], logits)
    pieces = ca.decompose_resid(cache, model).values
    frozen = ca.apply_final_norm(pieces, model, ca.final_scale(cache)).sum(0)
    _close(frozen @ model.params["unembed"]["W_U"], logits)
