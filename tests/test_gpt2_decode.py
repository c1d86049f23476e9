"""GPT-2 KV-cache decoding: decode equals forward (prompt chunk, then token by token, with
left padding), greedy `generate` equals recomputing, sites fire during decoding."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import max_diff

import mechjax as mj
from mechjax import kv_cache
from mechjax.io.families import family_of_module
from mechjax.models import gpt2

CFG = gpt2.Config(d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64, d_vocab=50, n_ctx=32)
MODEL = mj.Model(gpt2.init(jax.random.PRNGKey(0), CFG, scale=0.3), CFG, family_of_module("gpt2"))


def test_decode_equals_forward_with_left_padding():
    toks = jnp.asarray(np.random.RandomState(0).randint(0, 50, (2, 10)))
    mask = jnp.asarray(np.arange(10)[None] >= np.array([[0], [3]]))  # row 1: 3 pads on the left

    @jax.jit
    def both(params):
        out = gpt2.decode(
            params, toks[:, :6], CFG, kv_cache.init(CFG, 2, 12), attention_mask=mask[:, :6]
        )
        logits, cache = [out.logits], out.cache
        for t in range(6, 10):
            out = gpt2.decode(params, toks[:, t : t + 1], CFG, cache)
            logits.append(out.logits)
            cache = out.cache
        last = gpt2.decode(
            params,
            toks[:, :6],
            CFG,
            kv_cache.init(CFG, 2, 6),
            attention_mask=mask[:, :6],
            last_only=True,
        ).logits
        return (
            jnp.concatenate(logits, 1),
            gpt2.forward(params, toks, CFG, attention_mask=mask),
            last,
        )

    dec, full, last = both(MODEL.params)
    real = np.asarray(mask)
    assert np.abs(np.asarray(dec)[real] - np.asarray(full)[real]).max() <= 1e-5, max_diff(dec, full)
    assert np.abs(np.asarray(last)[:, 0] - np.asarray(full)[:, 5]).max() <= 1e-5


def test_greedy_generate_equals_recomputing_and_steering_applies():
    prompts = [[3, 14, 15, 9, 26, 5], [35, 8, 9]]
    n_new = 8
    gen = mj.generate(MODEL, prompts, n_new, stop_tokens=())
    fwd = jax.jit(lambda t, m: gpt2.forward(MODEL.params, t, CFG, attention_mask=m))
    width = 6
    buf = np.zeros((2, width + n_new), np.int32)
    msk = np.zeros(buf.shape, bool)
    for i, p in enumerate(prompts):
        buf[i, width - len(p) : width], msk[i, width - len(p) : width] = p, True
    for t in range(n_new):
        logits = fwd(jnp.asarray(buf), jnp.asarray(msk))
        buf[:, width + t] = np.asarray(jnp.argmax(logits[:, width + t - 1], -1))
        msk[:, width + t] = True
    assert np.asarray(gen.tokens).tolist() == buf[:, width:].tolist()

    delta = 5.0 * jax.random.normal(jax.random.PRNGKey(1), (CFG.d_model,))
    steered = mj.generate(
        MODEL, prompts, n_new, stop_tokens=(), hooks={"blocks.1.hook_resid_pre": mj.add(delta)}
    )
    assert np.asarray(steered.tokens).tolist() != buf[:, width:].tolist()
