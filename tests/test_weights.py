"""Weight processing keeps what each function's docstring says it keeps."""

import jax
import numpy as np
import pytest
from conftest import max_diff

import mechjax as mj
from mechjax import weights
from mechjax.io.families import family_of_module
from mechjax.models import llama, neox


@pytest.fixture(scope="module")
def models():
    """A GQA Llama with q/k/v biases (Qwen2-like, RMSNorm) and a GPT-NeoX (LayerNorm)."""
    lcfg = llama.Config(
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_head=8,
        d_mlp=48,
        d_vocab=50,
        n_ctx=64,
        qkv_bias=True,
        o_bias=True,
    )
    ncfg = neox.Config(
        d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=48, d_vocab=50, n_ctx=64, rotary_dim=4
    )
    key = jax.random.PRNGKey(1)
    lp, np_ = llama.init(key, lcfg, scale=0.3), neox.init(key, ncfg, scale=0.3)
    # an unembedding bias from the start: folding then keeps the pytree structure, so
    # each family compiles once
    np_["unembed"]["b_U"] = 0.3 * jax.random.normal(key, (ncfg.d_vocab,))
    return {
        "llama": mj.Model(lp, lcfg, family_of_module("llama")),
        "neox": mj.Model(np_, ncfg, family_of_module("neox")),
    }


TOKENS = np.random.RandomState(0).randint(0, 50, (2, 9)).astype(np.int32)
_logits = jax.jit(lambda m, t: mj.run(m, t).logits)


def _check(model, params, *, probs=False):
    a = _logits(model, TOKENS)
    b = _logits(model.replace(params=params), TOKENS)
    if probs:
        a, b = jax.nn.log_softmax(a), jax.nn.log_softmax(b)
    assert np.abs(np.asarray(a - b)).max() <= 1e-4, max_diff(a, b)


@pytest.mark.parametrize("name", ["llama", "neox"])
def test_fold_layer_norm_preserves_logits(models, name):
    model = models[name]
    folded = weights.fold_layer_norm(model.params)
    _check(model, folded)
    for ln in [folded["ln_final"]] + [b[k] for b in folded["blocks"] for k in ("ln1", "ln2")]:
        assert np.all(np.asarray(ln["w"]) == 1) and np.all(np.asarray(ln.get("b", 0.0)) == 0)
    if name == "neox":  # LayerNorm: reading weights centered over d_model
        assert np.abs(np.asarray(folded["blocks"][0]["attn"]["W_Q"].mean(1))).max() < 1e-6
    # the input is not modified
    assert not np.all(np.asarray(model.params["ln_final"]["w"]) == 1)


def test_center_writing_weights_preserves_logits(models):
    model = models["neox"]
    centered = weights.center_writing_weights(model.params)
    _check(model, centered)
    for W in (
        centered["embed"]["W_E"],
        centered["blocks"][1]["attn"]["W_O"],
        centered["blocks"][1]["mlp"]["b_out"],
    ):
        assert np.abs(np.asarray(W.mean(-1))).max() < 1e-6
    with pytest.raises(mj.InputError, match="RMSNorm"):
        weights.center_writing_weights(models["llama"].params)


@pytest.mark.parametrize("name", ["llama", "neox"])
def test_center_unembed_preserves_probabilities(models, name):
    model = models[name]
    centered = weights.center_unembed(model.params)
    _check(model, centered, probs=True)
    logits = np.asarray(_logits(model.replace(params=centered), TOKENS))
    assert np.abs(logits.mean(-1)).max() < 1e-4


@pytest.mark.parametrize("name", ["llama", "neox"])
def test_fold_value_biases_preserves_logits(models, name):
    model = models[name]
    folded = weights.fold_value_biases(model.params)
    _check(model, folded)
    assert np.all(np.asarray(folded["blocks"][0]["attn"]["b_V"]) == 0)
    assert np.abs(np.asarray(model.params["blocks"][0]["attn"]["b_V"])).max() > 0


def test_everything_together_preserves_probabilities(models):
    model = models["neox"]
    p = weights.fold_layer_norm(model.params)
    p = weights.center_writing_weights(p)
    p = weights.center_unembed(p)
    p = weights.fold_value_biases(p)
    _check(model, p, probs=True)


def test_unsupported_layout_is_refused(models):
    params = dict(models["llama"].params)
    params["blocks"] = [{**b, "ln1_post": {"w": b["ln1"]["w"]}} for b in params["blocks"]]
    with pytest.raises(mj.InputError, match="ln1_post"):
        weights.fold_layer_norm(params)
