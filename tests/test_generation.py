"""Generation: the KV-cache loop equals recomputing the sequence, sampling is reproducible,
step-dependent steering applies only where asked, bad input raises clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mechjax as mj
from mechjax import kv_cache
from mechjax.generation import generate, iter_generate, sample_logits
from mechjax.io.families import family_of_module
from mechjax.models import llama

# GQA and a sliding window shorter than the sequences, so the cache's masks are exercised
CFG = llama.Config(
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_head=8,
    d_mlp=48,
    d_vocab=50,
    n_ctx=32,
    sliding_window=4,
)
PROMPTS = [[3, 14, 15, 9, 26, 5], [35, 8, 9], [7, 9, 3, 2]]  # ragged: left-padded inside
N_NEW = 10
SITE = "blocks.0.hook_resid_pre"
N_STEER = 3


@pytest.fixture(scope="module")
def model():
    return mj.Model(
        llama.init(jax.random.PRNGKey(0), CFG, scale=0.3), CFG, family_of_module("llama")
    )


@jax.jit
def _run(model, tokens, mask, delta):
    return mj.run(model, tokens, {SITE: mj.add(delta)}, attention_mask=mask).logits


def _reference(model, delta_rows=None):
    """Greedy by recomputing the whole sequence at every step (no cache).

    The sequence lives in a fixed buffer (left-padded prompt, then generated tokens, the
    unfilled right part masked), so one compiled forward serves every step. `delta_rows`
    [width, d_model] is added at SITE per buffer position.
    """
    width = max(map(len, PROMPTS))
    buf = np.zeros((len(PROMPTS), width + N_NEW), np.int32)
    mask = np.zeros(buf.shape, bool)
    for i, p in enumerate(PROMPTS):
        buf[i, width - len(p) : width], mask[i, width - len(p) : width] = p, True
    if delta_rows is None:
        delta_rows = np.zeros((buf.shape[1], CFG.d_model), np.float32)
    for t in range(N_NEW):
        logits = _run(model, jnp.asarray(buf), jnp.asarray(mask), jnp.asarray(delta_rows))
        buf[:, width + t] = np.asarray(jnp.argmax(logits[:, width + t - 1], -1))
        mask[:, width + t] = True
    return buf[:, width:]


@pytest.fixture(scope="module")
def reference(model):
    return _reference(model)


def test_greedy_with_cache_equals_recomputing(model, reference):
    # a stop token that row 0 emits at step 4 (and not before)
    row0 = list(reference[0])
    stop = next(int(t) for t in row0[4:] if int(t) not in row0[:4])
    g = generate(model, PROMPTS, N_NEW, stop_tokens=[stop])
    for i, ref in enumerate(reference):
        hits = np.flatnonzero(ref == stop)
        n = int(hits[0]) + 1 if hits.size else N_NEW
        assert g.lengths[i] == n
        np.testing.assert_array_equal(g.tokens[i, :n], ref[:n])
        assert np.all(g.tokens[i, n:] == 0)  # padding after the stop token
    assert g.lengths[0] == row0.index(stop) + 1 and g.texts is None
    assert g.prompt.shape == g.prompt_mask.shape == (3, 6) and not g.prompt_mask[1, 0]
    # a right-padded array with its mask is re-padded on the left: same program, same tokens
    right = np.full((3, 7), 49, np.int32)
    mask = np.zeros((3, 7), bool)
    for i, p in enumerate(PROMPTS):
        right[i, : len(p)], mask[i, : len(p)] = p, True
    g2 = generate(model, right, N_NEW, attention_mask=mask, stop_tokens=[stop])
    np.testing.assert_array_equal(g2.tokens, g.tokens)


def test_kv_cache_decode_matches_forward_with_window(model):
    toks = jnp.asarray(np.random.RandomState(5).randint(0, 50, (2, 9)))
    mask = jnp.asarray(np.arange(9)[None] >= np.array([[3], [0]]))

    @jax.jit
    def both(params):
        full = llama.forward(params, toks, CFG, attention_mask=mask)
        out = llama.decode(
            params, toks[:, :6], CFG, kv_cache.init(CFG, 2, 9), attention_mask=mask[:, :6]
        )
        logits, cache = [out.logits], out.cache
        for t in range(6, 9):
            out = llama.decode(params, toks[:, t : t + 1], CFG, cache)
            logits.append(out.logits)
            cache = out.cache
        return full, jnp.concatenate(logits, 1), cache

    full, inc, cache = both(model.params)
    m = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(inc)[m], np.asarray(full)[m], atol=1e-5)
    assert int(cache.index) == 9 and list(np.asarray(cache.next_position)) == [6, 9]
    with pytest.raises(mj.InputError, match="do not fit"):
        llama.decode(model.params, toks[:, :1], CFG, cache)


def test_steering_only_the_first_steps(model, reference):
    delta = 3.0 * jax.random.normal(jax.random.PRNGKey(7), (CFG.d_model,))
    g = generate(
        model,
        PROMPTS,
        N_NEW,
        stop_tokens=(),
        hooks=lambda step, d: {SITE: mj.add(d * (step < N_STEER))},
        hook_args=delta,
    )
    # with the cache, step s runs the prompt (s = 0) or buffer position width + s - 1, so
    # steps < N_STEER cover buffer positions < width + N_STEER - 1
    width = max(map(len, PROMPTS))
    rows = np.zeros((width + N_NEW, CFG.d_model), np.float32)
    rows[: width + N_STEER - 1] = np.asarray(delta)
    np.testing.assert_array_equal(g.tokens, _reference(model, rows))
    assert not np.array_equal(g.tokens, reference)  # the steering does something
    always = _reference(model, np.broadcast_to(np.asarray(delta), rows.shape))
    assert not np.array_equal(g.tokens, always)  # and stops after N_STEER steps


def test_sampling_is_reproducible_per_key_and_streams_the_same(model):
    zero = {SITE: mj.add(jnp.zeros(CFG.d_model))}  # dict hooks at every step
    kw = dict(temperature=1.5, top_k=20, top_p=0.95, stop_tokens=(), hooks=zero)
    a = generate(model, PROMPTS, N_NEW, key=jax.random.key(1), **kw)
    b = generate(model, PROMPTS, N_NEW, key=jax.random.key(1), **kw)
    c = generate(model, PROMPTS, N_NEW, key=jax.random.key(2), **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    streamed = np.stack(list(iter_generate(model, PROMPTS, N_NEW, key=jax.random.key(1), **kw)), 1)
    np.testing.assert_array_equal(streamed, a.tokens)


def test_sample_logits_respects_top_k_top_p_and_temperature():
    logits = jnp.asarray(np.random.RandomState(0).randn(4, 50).astype(np.float32)) * 3
    keys = jax.random.split(jax.random.key(0), 200)
    draw = jax.jit(
        jax.vmap(
            lambda k, t, p: sample_logits(logits, k, temperature=t, top_k=3, top_p=p),
            in_axes=(0, None, None),
        )
    )
    top3 = np.argsort(-np.asarray(logits), -1)[:, :3]
    s = np.asarray(draw(keys, 1.0, 1.0))  # [200, 4]
    assert all(set(s[:, i]) <= set(top3[i]) for i in range(4))
    assert all(len(set(s[:, i])) > 1 for i in range(4))
    np.testing.assert_array_equal(
        np.asarray(draw(keys, 1.0, 1e-6)), np.broadcast_to(top3[:, 0], s.shape)
    )
    np.testing.assert_array_equal(
        np.asarray(draw(keys, 1e-4, 1.0)), np.broadcast_to(top3[:, 0], s.shape)
    )
    np.testing.assert_array_equal(
        np.asarray(sample_logits(logits, None, temperature=0)), top3[:, 0]
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompts=[list(range(1, 34))]), "longer than the context window"),
        (dict(max_new_tokens=30), "exceeds the context window"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=1.0, top_p=0.0, key=jax.random.key(0)), "top_p"),
        (dict(temperature=1.0, top_p=1.5, key=jax.random.key(0)), "top_p"),
        (dict(temperature=1.0, top_k=0, key=jax.random.key(0)), "top_k"),
        (dict(temperature=1.0, top_k=51, key=jax.random.key(0)), "top_k"),
        (dict(temperature=1.0), "PRNG key"),
        (dict(temperature=1.0, key=3), "PRNG key array"),
        (dict(top_k=5), "greedy"),
        (dict(prompts=[[1, 2], []]), "no tokens"),
        (dict(prompts=[[1, 50]]), "outside the vocabulary"),
        (dict(prompts=["hello"]), "tokenizer"),
        (dict(stop_tokens=[99]), "stop token"),
        (dict(hooks={"blocks.0.hook_resid_pr": mj.add(jnp.zeros(32))}), "did you mean"),
        (dict(hooks=[1]), "hooks must be"),
        (dict(prompt_width=2), "prompt_width=2 is out of range"),
        (dict(prompt_width=30), "prompt_width .30. \\+ max_new_tokens"),
    ],
)
def test_bad_input_raises_clear_errors(model, kwargs, match):
    kwargs = {"prompts": PROMPTS, "max_new_tokens": 4, **kwargs}
    with pytest.raises(mj.MechjaxError, match=match):
        generate(model, kwargs.pop("prompts"), kwargs.pop("max_new_tokens"), **kwargs)


def test_prompt_width_pads_without_changing_the_text(model, reference):
    """Wider left padding (for one program across calls) gives the same tokens."""
    n = reference.shape[1]
    wide = generate(model, PROMPTS, n, prompt_width=max(len(p) for p in PROMPTS) + 5)
    assert wide.prompt.shape[1] == max(len(p) for p in PROMPTS) + 5
    np.testing.assert_array_equal(wide.tokens, reference)


@pytest.mark.slow
def test_smollm2_greedy_with_cache_equals_recomputing():
    model = mj.load("smollm2-135m")
    prompts = ["The capital of France is", "Write a haiku about the sea."]
    n_new = 16
    g = generate(model, prompts, n_new, chat=True, stop_tokens=())
    buf = np.concatenate([g.prompt, np.zeros((2, n_new), np.int32)], 1)
    mask = np.concatenate([g.prompt_mask, np.zeros((2, n_new), bool)], 1)
    run = jax.jit(lambda m, t, mk: mj.run(m, t, attention_mask=mk).logits)
    width = g.prompt.shape[1]
    for t in range(n_new):
        logits = run(model, jnp.asarray(buf), jnp.asarray(mask))
        buf[:, width + t] = np.asarray(jnp.argmax(logits[:, width + t - 1], -1))
        mask[:, width + t] = True
    np.testing.assert_array_equal(g.tokens, buf[:, width:])
    assert all(isinstance(t, str) and t for t in g.texts)


@pytest.mark.slow
def test_cli_generate_streams_text():
    import io

    from mechjax.cli import build_parser

    args = build_parser().parse_args(
        ["generate", "smollm2-135m", "Write a haiku about the sea.", "--chat", "-n", "12"]
    )
    buf = io.StringIO()
    assert args.fn(args, out=buf) == 0
    model = mj.load("smollm2-135m")
    want = generate(model, ["Write a haiku about the sea."], 12, chat=True).texts[0]
    assert buf.getvalue() == want + "\n"


def test_generate_texts_equals_one_call_per_prompt(tiny_smollm2):
    # prompts of different lengths, more of them than a batch (the last call padded)
    prompts = ["The cat", "Once upon a time there was", "1 + 1 =", "Hello"]
    got = mj.generation.generate_texts(tiny_smollm2, prompts, 5, batch=3, stop_tokens=())
    want = [mj.generate(tiny_smollm2, [p], 5, stop_tokens=()).texts[0] for p in prompts]
    assert got == want
    with pytest.raises(mj.errors.InputError, match="batch and bucket must be >= 1"):
        mj.generation.generate_texts(tiny_smollm2, prompts, 5, batch=0)
