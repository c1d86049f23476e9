"""Neurons: weight statistics against brute force, the fast mean-ablation path against
full patched forwards (total: nothing frozen; direct: the norm scales patched to their
clean values), a constructed null-space neuron, the unigram-frozen ablation, induction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff

import mechjax as mj
from mechjax import cache_analysis as ca
from mechjax import neurons as nr
from mechjax.io.families import family_of_module
from mechjax.models import gemma3, neox, toy


def _neox():
    cfg = neox.Config(
        d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=48, d_vocab=50, n_ctx=64, rotary_dim=4
    )
    return mj.Model(neox.init(jax.random.PRNGKey(2), cfg, scale=0.3), cfg, family_of_module("neox"))


def _gemma():
    cfg = gemma3.Config(
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_head=8,
        d_mlp=48,
        d_vocab=50,
        n_ctx=64,
        sliding_window=4,
        query_pre_attn_scalar=8.0,
    )
    p = gemma3.init(jax.random.PRNGKey(3), cfg, scale=0.3)
    # norm gains visibly away from 1, so a gain applied as w instead of 1 + w shows
    p = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.3 if jax.tree_util.keystr(path).endswith("['w']") else x, p
    )
    return mj.Model(p, cfg, family_of_module("gemma3"))


@pytest.fixture(scope="module", params=["llama", "neox", "gemma3"])
def model(request, tiny_llama):
    return {"llama": lambda: tiny_llama, "neox": _neox, "gemma3": _gemma}[request.param]()


@pytest.fixture(scope="module")
def toks():
    return jnp.asarray(np.random.RandomState(1).randint(0, 50, (3, 9)), jnp.int32)


def _set_neuron(params, x):
    n, v = params
    return x.at[..., n].set(v)


def _reference(model, toks, layer, n, mean, freeze: bool):
    """Loss and entropy per token from a full forward with neuron n set to `mean`; with
    `freeze`, the final norm's scale (and Gemma's post-MLP norm scale of the layer) patched
    to the clean run's values: the direct effect, computed without the fast path."""
    b = f"blocks.{layer}"
    scales = ["ln_final.hook_scale"]
    if "ln2_post" in model.params["blocks"][layer]:
        scales.append(f"{b}.ln2_post.hook_scale")
    clean = mj.run(model, toks, capture=scales)
    hooks = {f"{b}.mlp.hook_post": mj.apply_fn(_set_neuron, (n, mean))}
    if freeze:
        hooks.update({s: mj.patch(clean.cache[s]) for s in scales})
    logits = mj.run(model, toks, hooks).logits[:, :-1]
    logp = jax.nn.log_softmax(logits, -1)
    loss = -jnp.take_along_axis(logp, toks[:, 1:, None], -1)[..., 0]
    return np.asarray(loss), np.asarray(-(jnp.exp(logp) * logp).sum(-1))


def _close(a, b, tol):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.abs(a - b).max() <= tol, max_diff(a, b)


def test_fast_path_equals_patched_forwards(model, toks):
    last = model.config.n_layers - 1
    layers = [last] if "ln2_post" in model.params["blocks"][0] else [0, last]
    for layer in layers:
        ids = [7, 30]
        eff = nr.ablation_effects(model, toks, layer, ids, token_chunk=8, neuron_batch=2)
        post = mj.run(model, toks, capture=(f"blocks.{layer}.mlp.hook_post",)).cache
        means = np.asarray(post[f"blocks.{layer}.mlp.hook_post"]).mean((0, 1))[ids]
        _close(eff.means, means, 1e-6)
        for i, n in enumerate(ids):
            loss_t, ent_t = _reference(model, toks, layer, n, eff.means[i], freeze=False)
            loss_d, ent_d = _reference(model, toks, layer, n, eff.means[i], freeze=True)
            _close(eff.loss + eff.d_loss_total[i], loss_t, 1e-5)
            _close(eff.entropy + eff.d_entropy_total[i], ent_t, 1e-5)
            _close(eff.loss + eff.d_loss_direct[i], loss_d, 1e-5)
            _close(eff.entropy + eff.d_entropy_direct[i], ent_d, 1e-5)
        # the ablation does something, and total and direct differ (the norm is nonlinear)
        assert np.abs(eff.d_loss_total).max() > 1e-3
        assert np.abs(eff.d_loss_total - eff.d_loss_direct).max() > 1e-5


def test_logit_decomposition_direct_plus_norm_part_is_total(tiny_llama, toks):
    """Where the decomposition is exact (logits, last layer), direct + norm-mediated = total,
    with each part from its own forward: frozen scale; scale-only change; full recompute."""
    model, L = tiny_llama, tiny_llama.config.n_layers - 1
    b = f"blocks.{L}"
    clean = mj.run(model, toks, capture=("ln_final.hook_scale", f"{b}.hook_resid_post"))
    hook = {f"{b}.mlp.hook_post": mj.apply_fn(_set_neuron, (5, 0.7))}
    ablated = mj.run(model, toks, hook, capture=("ln_final.hook_scale",))
    frozen = mj.run(
        model, toks, {**hook, "ln_final.hook_scale": mj.patch(clean.cache["ln_final.hook_scale"])}
    )
    # the norm-mediated part: the ablated stream, normalised by the ablated vs the clean scale
    r = (
        clean.cache[f"{b}.hook_resid_post"]
        + (
            0.7
            - mj.run(model, toks, capture=(f"{b}.mlp.hook_post",)).cache[f"{b}.mlp.hook_post"][
                ..., 5
            ]
        )[..., None]
        * model.params["blocks"][L]["mlp"]["W_out"][5]
    )
    W = model.params["unembed"]["W_U"]
    norm_part = (
        ca.apply_final_norm(r, model, ablated.cache["ln_final.hook_scale"])
        - ca.apply_final_norm(r, model, clean.cache["ln_final.hook_scale"])
    ) @ W
    direct = frozen.logits - clean.logits
    _close(direct + norm_part, ablated.logits - clean.logits, 1e-4)


def test_null_space_neuron_has_no_direct_effect(tiny_llama, toks):
    """A neuron whose w_out lies in the null space of W_U: rho = 1, direct effect 0, while
    its total effect (through the final norm's scale) is not 0."""
    p = jax.tree.map(lambda x: x, tiny_llama.params)
    e = np.random.RandomState(0).randn(tiny_llama.config.d_model)
    e /= np.linalg.norm(e)
    W_U = np.asarray(p["unembed"]["W_U"])
    p["unembed"]["W_U"] = jnp.asarray(W_U - np.outer(e, e @ W_U), jnp.float32)
    p["ln_final"]["w"] = jnp.ones_like(p["ln_final"]["w"])
    L = tiny_llama.config.n_layers - 1
    p["blocks"][L]["mlp"]["W_out"] = p["blocks"][L]["mlp"]["W_out"].at[3].set(4.0 * e)
    model = mj.Model(p, tiny_llama.config, tiny_llama.family)
    stats = nr.weight_stats(model, [L], k=1)
    assert stats.rho[0, 3] == pytest.approx(1.0, abs=1e-4)
    assert stats.top(1) == [[L, 3]]
    eff = nr.ablation_effects(model, toks, L, [3, 4])
    assert np.abs(eff.d_loss_direct[0]).max() < 1e-5
    assert np.abs(eff.d_loss_total[0]).max() > 1e-3
    assert eff.ln_mediated_fraction()[0] == pytest.approx(1.0, abs=1e-3)
    assert eff.ln_mediated_fraction()[1] < 0.99


def test_weight_stats_against_brute_force(model):
    stats = nr.weight_stats(model, k=3)
    W = np.asarray(ca.final_gain(model))[:, None] * np.asarray(model.params["unembed"]["W_U"])
    W = W - W.mean(1, keepdims=True)
    U = np.linalg.svd(W.astype(np.float64), full_matrices=False)[0]
    for i, l in enumerate(stats.layers):
        w = np.asarray(nr._writes(model, l), np.float64)
        cos = (w / np.linalg.norm(w, axis=1, keepdims=True)) @ (W / np.linalg.norm(W, axis=0))
        _close(stats.norm[i], np.linalg.norm(w, axis=1), 1e-4)
        _close(stats.logit_var[i], cos.var(axis=1, ddof=1), 1e-5)
        _close(
            stats.rho[i], np.linalg.norm(w @ U[:, -3:], axis=1) / np.linalg.norm(w, axis=1), 1e-4
        )
    top = nr.neuron_logits(model, 1, 2, k=3)
    v = np.asarray(nr._writes(model, 1))[2] @ W
    assert top.boosted == list(np.argsort(-v)[:3]) and top.suppressed == list(np.argsort(v)[:3])


def test_unigram_frozen_ablation(tiny_llama, toks):
    model, L = tiny_llama, tiny_llama.config.n_layers - 1
    counts = np.random.RandomState(2).randint(0, 100, 50)
    u, logp_uni = nr.unigram_direction(counts)
    assert float(jnp.linalg.norm(u)) == pytest.approx(1.0, abs=1e-6)
    assert abs(float(u.sum())) < 1e-5
    eff = nr.ablation_effects(model, toks, L, [1, 2], unigram=(u, logp_uni))
    b = f"blocks.{L}"
    clean = mj.run(model, toks).logits[:, :-1]
    for i, n in enumerate([1, 2]):
        hook = {f"{b}.mlp.hook_post": mj.apply_fn(_set_neuron, (n, eff.means[i]))}
        logits = mj.run(model, toks, hook).logits[:, :-1]
        fixed = logits + ((clean - logits) @ u)[..., None] * u
        logp = jax.nn.log_softmax(fixed, -1)
        loss = -jnp.take_along_axis(logp, toks[:, 1:, None], -1)[..., 0]
        _close(eff.loss + eff.d_loss_unigram_frozen[i], loss, 1e-5)
        lp = jax.nn.log_softmax(logits, -1)
        _close(eff.kl_unigram_total[i], (jnp.exp(lp) * (lp - logp_uni)).sum(-1), 1e-5)
    assert eff.unigram_mediated_fraction().shape == (2,)


def test_bad_input(tiny_llama, toks):
    with pytest.raises(mj.InputError, match="out of range for layer 1: valid 0..47"):
        nr.ablation_effects(tiny_llama, toks, 1, [48])
    with pytest.raises(mj.InputError, match="layers 0..1"):
        nr.weight_stats(tiny_llama, [2])
    with pytest.raises(mj.InputError, match="expected \\(2,\\)"):
        nr.ablation_effects(tiny_llama, toks, 1, [0, 1], means=[0.0])
    cfg = toy.ToyConfig(d_model=16, n_layers=1, n_heads=2, d_head=8, d_vocab=50, n_ctx=16)
    attn_only = mj.Model(toy.init(jax.random.PRNGKey(0), cfg), cfg, family_of_module("toy"))
    with pytest.raises(mj.SiteError, match="has no MLP"):
        nr.ablation_effects(attn_only, toks, 0, [0])


def test_induction_tokens_scores_and_bos_ablation(tiny_llama):
    toks = nr.induction_tokens(tiny_llama, n=4, length=6, bos=0, seed=1)
    assert toks.shape == (4, 13) and (toks[:, 0] == 0).all()
    assert (toks[:, 1:7] == toks[:, 7:]).all()
    scores = nr.induction_head_scores(tiny_llama, toks, 6)
    pats = mj.run(tiny_llama, toks, capture=("blocks.1.attn.hook_pattern",)).cache
    p = np.asarray(pats["blocks.1.attn.hook_pattern"]).mean(0)
    want = [np.mean([p[h, q, q - 5] for q in range(7, 13)]) for h in range(4)]
    _close(scores[1], want, 1e-6)
    hooks = nr.bos_ablation([(1, 2)], start=7)
    after = mj.run(tiny_llama, toks, hooks, capture=("blocks.1.attn.hook_pattern",)).cache
    a = np.asarray(after["blocks.1.attn.hook_pattern"])
    assert (a[:, 2, 7:, 0] == 1).all() and (a[:, 2, 7:, 1:] == 0).all()
    _close(a[:, 2, :7], np.asarray(pats["blocks.1.attn.hook_pattern"])[:, 2, :7], 0)
    _close(a[:, 1], np.asarray(pats["blocks.1.attn.hook_pattern"])[:, 1], 0)
