"""A researcher's first hour: compiled eager runs, flexible capture, text in and out,
TransformerLens names pointed to their mechjax form, helpful cache errors, short reprs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from conftest import max_diff
from tokenizers import decoders, models, pre_tokenizers

import mechjax as mj
from mechjax import model as model_mod
from mechjax.io.families import family_of_module
from mechjax.io.tokenizer import Tokenizer
from mechjax.models import bert

L1 = "blocks.1.hook_resid_pre"
WORDS = ["<s>", "<pad>", "<unk>", "The", "\u2581capital", "\u2581of", "\u2581France", "\u2581is"]
WORDS += ["\u2581Paris", "Paris", "\u2581Rome", "\u2581a", "\u2581city", "\u2581big", "A"]


def _close(a, b, tol):
    assert np.allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=0), max_diff(a, b)


def _traces() -> int:
    return model_mod._TRACE_COUNT["run"]


@pytest.fixture(scope="module")
def word_llama(tiny_llama):
    """The tiny Llama with a word-level tokenizer whose words carry sentencepiece's
    word-initial marker, so " Paris" and "Paris" are different single tokens."""
    backend = tokenizers.Tokenizer(
        models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>")
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    backend.decoder = decoders.Metaspace(prepend_scheme="never")
    tok = Tokenizer(backend, bos_token="<s>", pad_token="<pad>", add_bos=True)
    return dataclasses.replace(tiny_llama, tokenizer=tok)


# ------------------------------------------------------------------ compiled by default


def test_repeated_eager_runs_compile_once(tiny_llama, tokens):
    other = (tokens + 11) % 50  # new tokens, same shape
    calls = [
        (tokens, mj.add(jnp.full((32,), 0.5), positions=[1])),
        (tokens, mj.add(jnp.full((32,), -2.0), positions=[4])),
        (other, mj.add(jnp.full((32,), 3.0), positions=[-1])),
        (other, mj.add(jnp.linspace(0, 1, 32), positions=[0])),
    ]
    cap = ["blocks.0.attn.hook_pattern", "blocks.1.hook_mlp_out"]
    # a capture set no other test uses, so the first call below is the one that traces
    cap.append("blocks.0.ln2.hook_scale")
    before = _traces()
    outs = [mj.run(tiny_llama, t, {L1: iv}, capture=cap) for t, iv in calls]
    assert _traces() - before == 1
    for (t, iv), out in zip(calls, outs):
        ref = mj.run(tiny_llama, t, {L1: iv}, capture=cap, jit=False)
        _close(out.logits, ref.logits, 1e-4)
        for name in cap:
            _close(out.cache[name], ref.cache[name], 1e-4)
    assert _traces() - before == 1  # jit=False never enters the compiled program


def test_eager_grad_compiles_once_and_matches_uncompiled(tiny_llama, tokens):
    def metric(delta, jit):
        hooks = {"blocks.0.hook_mlp_out": mj.add(delta)}
        return mj.run(tiny_llama, tokens, hooks, jit=jit).logits[:, -1, 3].sum()

    before = _traces()
    grads = [jax.grad(metric)(jnp.full((32,), float(i)), True) for i in range(3)]
    assert _traces() - before == 1
    for i, g in enumerate(grads):
        _close(g, jax.grad(metric)(jnp.full((32,), float(i)), False), 1e-4)


def _double(params, x):
    return x * params["a"]


def test_apply_fn_hooks_reuse_the_program_inside_user_transforms(tiny_llama, tokens):
    def logits(a, jit=True):
        hooks = {L1: mj.apply_fn(_double, {"a": a}, positions=[2])}
        return mj.run(tiny_llama, tokens, hooks, jit=jit).logits

    before = _traces()
    for a in (0.5, 2.0, -1.0):
        _close(logits(jnp.float32(a)), logits(jnp.float32(a), jit=False), 1e-4)
    assert _traces() - before == 1
    # nested in the user's own jit, vmap and grad
    a = jnp.asarray([0.5, 2.0, -1.0])
    _close(jax.jit(jax.vmap(logits))(a), jnp.stack([logits(x, False) for x in a]), 1e-4)
    g = jax.grad(lambda x: logits(x)[0, -1, 0])(jnp.float32(1.5))
    g0 = jax.grad(lambda x: logits(x, False)[0, -1, 0])(jnp.float32(1.5))
    _close(g, g0, 1e-4)


def test_host_checks_still_run_on_every_compiled_call(tiny_llama, tokens):
    mj.run(tiny_llama, tokens, {L1: mj.add(jnp.zeros(32), positions=[0])})  # compiled
    before = _traces()
    # indices are traced in the compiled program; their range is checked on the host
    with pytest.raises(mj.InterventionError, match=r"positions index 7 .*\[-7, 7\)"):
        mj.run(tiny_llama, tokens, {L1: mj.add(jnp.zeros(32), positions=[7])})
    k = "blocks.0.attn.hook_k"  # GQA: 2 key/value heads
    mj.run(tiny_llama, tokens, {k: mj.ablate("zero", heads=[1])})
    with pytest.raises(mj.InterventionError, match=r"heads index 2 .*\[0, 2\)"):
        mj.run(tiny_llama, tokens, {k: mj.ablate("zero", heads=[2])})
    assert _traces() - before == 1  # the bad calls reused the programs of the good ones
    with pytest.raises(mj.InputError, match="outside the vocabulary"):
        mj.run(tiny_llama, tokens.at[0, 0].set(50))
    with pytest.raises(mj.SiteError, match="blocks.1.hook_resid_pre"):
        mj.run(tiny_llama, tokens, {"blocks.1.hook_resid_pree": mj.add(jnp.zeros(32))})


# ------------------------------------------------------------------------ capture forms


def test_capture_accepts_one_name_list_tuple_set_and_tl_tuples(tiny_llama, tokens):
    a, b = "blocks.1.hook_mlp_out", "blocks.0.attn.hook_pattern"
    assert list(mj.run(tiny_llama, tokens, capture=a).cache) == [a]
    assert list(mj.run(tiny_llama, tokens, capture=[a, b]).cache) == [a, b]
    assert list(mj.run(tiny_llama, tokens, capture=(a, b, a)).cache) == [a, b]
    # a set has no order of its own: it is ordered as model.sites (forward order)
    assert list(mj.run(tiny_llama, tokens, capture={a, b}).cache) == [b, a]
    out = mj.run(tiny_llama, tokens, capture=("pattern", 0))
    assert list(out.cache) == [b]
    out = mj.run(tiny_llama, tokens, capture=[("mlp_out", 1), ("scale", 0, "ln1")])
    assert list(out.cache) == [a, "blocks.0.ln1.hook_scale"]


def test_tl_tuple_site_in_hooks_equals_full_name(tiny_llama, tokens):
    delta = jnp.full((32,), 0.7)
    full = mj.run(tiny_llama, tokens, {L1: mj.add(delta)}).logits
    short = mj.run(tiny_llama, tokens, {("resid_pre", 1): mj.add(delta)}).logits
    _close(short, full, 0)


@pytest.mark.parametrize(
    "name, fix",
    [
        ("resid_pre", "mj.act_name('resid_pre', 3) == 'blocks.3.hook_resid_pre'"),
        ("hook_resid_pre", "mj.act_name('resid_pre', 3) == 'blocks.3.hook_resid_pre'"),
        ("blocks.1.resid_pre", "write 'blocks.1.hook_resid_pre'"),
        ("blocks.0.hook_pattern", "write 'blocks.0.attn.hook_pattern'"),
        ("pattern", "('pattern', 3)"),
    ],
)
def test_tl_short_names_say_what_to_write(tiny_llama, tokens, name, fix):
    with pytest.raises(mj.SiteError, match=f"unknown site {name!r}.*") as e:
        mj.run(tiny_llama, tokens, {name: mj.scale(1.0)})
    assert fix in str(e.value)
    with pytest.raises(mj.SiteError, match="capture site") as e:
        mj.run(tiny_llama, tokens, capture=[name])
    assert fix in str(e.value)


# ------------------------------------------------------------------------------- cache


def test_cache_takes_tl_keys_and_names_what_was_captured(tiny_llama, tokens):
    out = mj.run(tiny_llama, tokens, capture=["blocks.0.attn.hook_pattern", L1])
    assert out.cache["pattern", 0] is out.cache["blocks.0.attn.hook_pattern"]
    assert ("resid_pre", 1) in out.cache and ("resid_pre", 0) not in out.cache
    assert out.cache.get("blocks.0.hook_mlp_out") is None
    with pytest.raises(KeyError, match=r"captured: 2 sites .*hook_pattern.*capture=\["):
        out.cache["blocks.0.hook_mlp_out"]
    with pytest.raises(mj.SiteError, match=r"act_name\('resid_post', 3\)"):
        out.cache["resid_post"]
    with pytest.raises(mj.SiteError, match="nothing was captured"):
        mj.run(tiny_llama, tokens).cache[L1]


def test_output_and_cache_are_pytrees(tiny_llama, tokens):
    out = mj.run(tiny_llama, tokens, capture=[L1, "blocks.0.hook_mlp_out"])
    doubled = jax.tree.map(lambda x: 2 * x, out)
    assert isinstance(doubled, mj.Output) and isinstance(doubled.cache, mj.Cache)
    _close(doubled.cache[L1], 2 * out.cache[L1], 0)
    assert len(jax.tree.leaves(out)) == 3
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(out)[0]]
    assert any(L1 in p for p in paths)
    # a jitted function can return an Output, the cache still a Cache
    jitted = jax.jit(lambda m, t: mj.run(m, t, capture=[L1]))(tiny_llama, tokens)
    assert isinstance(jitted.cache, mj.Cache) and jitted.cache["resid_pre", 1].shape == (3, 7, 32)


# -------------------------------------------------------------------------------- reprs


def test_reprs_are_short_and_informative(tiny_llama, tokens, word_llama):
    r = repr(tiny_llama)
    assert len(r) < 2000 and "llama" in r and "d_model=32" in r and "n_layers=2" in r
    n = sum(x.size for x in jax.tree.leaves(tiny_llama.params))
    assert f"params={n / 1e3:.1f}K" in r and "tokenizer=no" in r
    assert "tokenizer=yes" in repr(word_llama)
    out = mj.run_with_cache(tiny_llama, tokens)
    r = repr(out)
    assert len(r) < 2000, len(r)
    assert "logits=float32[3, 7, 50]" in r and "hook_embed: float32[3, 7, 32]" in r
    assert f"({len(out.cache)} sites)" in r
    assert len(repr(out.cache)) < 2000


# ------------------------------------------------------------------------ text in, out


def test_run_tokenizes_text_with_the_bos_convention(word_llama):
    ids = word_llama.to_tokens("The capital of France is")
    assert ids.dtype == jnp.int32 and ids.tolist() == [[0, 3, 4, 5, 6, 7]]
    assert word_llama.to_tokens("The capital", prepend_bos=False).tolist() == [[3, 4]]
    _close(mj.run(word_llama, "The capital of France is").logits, mj.run(word_llama, ids).logits, 0)


def test_a_list_of_texts_is_right_padded_with_a_mask(word_llama):
    texts = ["The capital of France is", "A big city"]
    ids = word_llama.to_tokens(texts)
    assert ids.tolist() == [[0, 3, 4, 5, 6, 7], [0, 14, 13, 12, 1, 1]]  # <pad> = 1, right
    batched = mj.run(word_llama, texts, capture=[L1])
    for b, text in enumerate(texts):
        alone = mj.run(word_llama, text, capture=[L1])
        n = alone.logits.shape[1]
        _close(batched.logits[b, :n], alone.logits[0], 1e-4)
        _close(batched.cache[L1][b, :n], alone.cache[L1][0], 1e-4)
    with pytest.raises(mj.InputError, match="attention_mask"):
        mj.run(word_llama, texts, attention_mask=jnp.ones(ids.shape, bool))


def test_to_str_tokens_and_to_string(word_llama):
    assert word_llama.to_str_tokens("The capital of") == ["<s>", "The", " capital", " of"]
    ids = word_llama.to_tokens(["The capital", "A city"], prepend_bos=False)
    assert word_llama.to_str_tokens(ids[0]) == ["The", " capital"]
    assert word_llama.to_str_tokens(ids) == [["The", " capital"], ["A", " city"]]
    assert word_llama.to_string(ids[0]) == "The capital"
    assert word_llama.to_string(ids) == ["The capital", "A city"]


def test_text_where_ids_are_expected_is_an_input_error(tiny_llama, word_llama):
    with pytest.raises(mj.InputError, match="no tokenizer"):
        mj.run(tiny_llama, "The capital")
    with pytest.raises(mj.InputError, match="no tokenizer"):
        tiny_llama.to_tokens("The capital")
    with pytest.raises(mj.InputError, match="text where token ids are expected"):
        model_mod.check_tokens("The capital", 50)
    with pytest.raises(mj.InputError, match="integers"):
        word_llama.to_string("The capital")
    with pytest.raises(mj.InputError, match="mixing strings"):
        mj.run(word_llama, ["The capital", 3])


# ------------------------------------------------------------------------- test_prompt


def test_test_prompt_ranks_the_answer_as_the_logits_do(word_llama, capsys):
    prompt = "The capital of France is"
    res = mj.test_prompt(word_llama, prompt, " Paris", top_k=5)
    logits = np.asarray(mj.run(word_llama, prompt).logits[0, -1])
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    assert res.answer_ids == [8] and res.answer_tokens == [" Paris"]
    assert res.rank == int((logits > logits[8]).sum())
    assert np.isclose(res.prob, probs[8], atol=1e-6) and np.isclose(res.logits[0], logits[8])
    top = np.argsort(-logits)[:5]
    assert [p for _, p in res.top_k[0]] == pytest.approx(probs[top].tolist(), abs=1e-6)
    printed = capsys.readouterr().out
    assert "' Paris'" in printed and f"rank {res.rank}" in printed
    quiet = mj.test_prompt(word_llama, prompt, " Paris", print_details=False)
    assert capsys.readouterr().out == "" and quiet.ranks == res.ranks
    # several answer tokens are scored teacher-forced, one row each
    two = mj.test_prompt(word_llama, prompt, " a city", print_details=False)
    assert two.answer_ids == [11, 12] and len(two.ranks) == len(two.top_k) == 2


def test_answer_without_its_space_warns_naming_both_forms(word_llama):
    with pytest.warns(UserWarning, match=r"'Paris'.*' Paris' \(id 8\)"):
        res = mj.test_prompt(word_llama, "The capital of France is", "Paris", print_details=False)
    assert res.answer_ids == [9]  # scored as given


def test_test_prompt_refuses_an_encoder(word_llama):
    cfg = bert.Config(d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32, d_vocab=20)
    fam = family_of_module("bert")
    enc = mj.Model(fam.init(jax.random.PRNGKey(0), cfg), cfg, fam, word_llama.tokenizer)
    with pytest.raises(mj.InputError, match="encoder"):
        mj.test_prompt(enc, "The capital of France is", " Paris")


@pytest.mark.slow
def test_smollm2_first_hour():
    model = mj.load("smollm2-135m")
    # 162.8M arrays held: 134.5M weights plus the tied unembedding, stored as TL does
    assert len(repr(model)) < 300 and "params=162.8M" in repr(model)
    prompt = "The capital of France is"
    with pytest.warns(UserWarning, match="' Paris'"):
        mj.test_prompt(model, prompt, "Paris", print_details=False)
    res = mj.test_prompt(model, prompt, " Paris", print_details=False)
    assert res.rank == 0, res
    out = mj.run(model, [prompt, "Hello"], capture=("resid_post", 3))
    _close(out.logits[0], mj.run(model, prompt).logits[0], 1e-3)
    assert len(repr(out)) < 2000


def test_a_fresh_function_per_call_warns_instead_of_silently_recompiling(tiny_llama, tokens):
    def one_call(a):
        return mj.run(
            tiny_llama, tokens, {"blocks.0.hook_attn_out": mj.apply_fn(lambda p, x: x * p, a)}
        )

    with pytest.warns(UserWarning, match="compiled 3 programs.*apply_fn"):
        for a in (1.0, 2.0, 3.0):
            one_call(jnp.float32(a))
