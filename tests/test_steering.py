"""Steering (mechjax.steering): the interventions' algebra, per-row sweeps in one
generation, vectors from pairs, perplexity, the layer search and its errors.

The algebra and the batching are tested on a tiny random Llama (token-id prompts); the
parts that need text (pairs through the chat template, checkers) on SmolLM2-135M."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mechjax as mj
from mechjax import steering as st
from mechjax.errors import InputError, InterventionError

SITE = "blocks.0.hook_resid_post"


def _unit(d, seed):
    v = np.random.RandomState(seed).standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------------- the algebra


def test_adjust_rs_sets_the_projection_and_keeps_the_rest():
    x = jnp.asarray(np.random.RandomState(0).standard_normal((3, 5, 8)), jnp.float32)
    u = _unit(8, 1)
    y = st.adjust_rs(u, 2.5).apply(x, SITE)
    np.testing.assert_allclose(np.asarray(y) @ u, 2.5, atol=1e-5)
    perp = lambda a: np.asarray(a) - (np.asarray(a) @ u)[..., None] * u  # noqa: E731
    np.testing.assert_allclose(perp(y), perp(x), atol=1e-5)
    # per-row targets and gates: row 1 gated off is bit-identical
    y = st.adjust_rs(u, jnp.array([1.0, 9.0, -2.0]), gate=jnp.array([1.0, 0.0, 1.0])).apply(x, SITE)
    np.testing.assert_allclose(np.asarray(y[0]) @ u, 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y[2]) @ u, -2.0, atol=1e-5)
    assert np.array_equal(np.asarray(y[1]), np.asarray(x[1]))


def test_add_vector_adds_w_times_the_unit_direction_per_row():
    x = jnp.asarray(np.random.RandomState(0).standard_normal((2, 4, 8)), jnp.float32)
    u = np.stack([_unit(8, 1), _unit(8, 2)])
    y = st.add_vector(3 * u, jnp.array([2.0, 0.0])).apply(x, SITE)  # direction normalised
    np.testing.assert_allclose(np.asarray(y[0]), np.asarray(x[0]) + 2.0 * u[0], atol=1e-5)
    assert np.array_equal(np.asarray(y[1]), np.asarray(x[1]))  # w = 0: unchanged


def test_steering_interventions_refuse_bad_shapes():
    x = jnp.zeros((2, 4, 8))
    with pytest.raises(InterventionError, match="dimension"):
        st.add_vector(np.ones(7), 1.0).apply(x, SITE)
    with pytest.raises(InterventionError, match="3 rows.*batch 2"):
        st.add_vector(np.ones((3, 8)), 1.0).apply(x, SITE)
    with pytest.raises(InterventionError, match="zero vector"):
        st.adjust_rs(np.zeros(8), 1.0)


def test_adjust_rs_to_the_current_projection_changes_nothing(tiny_llama, tokens):
    u = _unit(tiny_llama.config.d_model, 3)
    clean = mj.run(tiny_llama, tokens, capture=[SITE])
    p = 4
    current = np.asarray(clean.cache[SITE][:, p]) @ u  # per row, at position p
    out = mj.run(tiny_llama, tokens, hooks={SITE: st.adjust_rs(u, current, positions=p)})
    np.testing.assert_allclose(np.asarray(out.logits), np.asarray(clean.logits), atol=1e-5)
    moved = mj.run(tiny_llama, tokens, hooks={SITE: st.adjust_rs(u, current + 5, positions=p)})
    assert np.abs(np.asarray(moved.logits) - np.asarray(clean.logits)).max() > 1e-2


# ---------------------------------------------------------------------- batched sweeps

PROMPTS = [[3, 9, 14, 2], [7, 1, 30, 30, 5, 11], [22, 4]]


def test_zero_weight_and_zero_gate_leave_generation_unchanged(tiny_llama):
    plain = mj.generate(tiny_llama, PROMPTS, 6, stop_tokens=())
    u = _unit(tiny_llama.config.d_model, 4)
    for steer in (st.Steer(1, u, 0.0, "add"),):
        g = st.generate_candidates(tiny_llama, PROMPTS, [[steer]] * 3, 6, stop_tokens=())
        assert np.array_equal(g.tokens, plain.tokens)
    hooks = {"blocks.1.hook_resid_post": st.adjust_rs(u, 7.0, gate=0.0)}
    g = mj.generate(tiny_llama, PROMPTS, 6, hooks=hooks, stop_tokens=())
    assert np.array_equal(g.tokens, plain.tokens)
    hooks = {"blocks.1.hook_resid_post": st.adjust_rs(u, 7.0)}  # gate 1: it does steer
    g = mj.generate(tiny_llama, PROMPTS, 6, hooks=hooks, stop_tokens=())
    assert not np.array_equal(g.tokens, plain.tokens)


def test_each_row_of_a_sweep_equals_its_own_generation(tiny_llama):
    """Per-row steering values in one batch give each row what a shared-value
    intervention gives the same prompts in a batch of their own."""
    d = tiny_llama.config.d_model
    u0, u1 = _unit(d, 5), _unit(d, 6)
    cands = [
        [],
        [st.Steer(0, u0, 6.0, "add")],
        [st.Steer(1, u1, -4.0, "adjust")],
        [st.Steer(0, u0, 3.0, "adjust"), st.Steer(1, u1, 5.0, "add")],
    ]
    rows = [p for _ in cands for p in PROMPTS]
    steers = [c for c in cands for _ in PROMPTS]
    got = st.generate_candidates(tiny_llama, rows, steers, 5, stop_tokens=())
    for k, c in enumerate(cands):
        hooks: dict = {}
        for s in c:
            iv = (
                st.adjust_rs(s.direction, s.coeff)
                if s.mode == "adjust"
                else st.add_vector(s.direction, s.coeff)
            )
            hooks[f"blocks.{s.layer}.hook_resid_post"] = iv
        alone = mj.generate(tiny_llama, PROMPTS, 5, hooks=hooks, stop_tokens=())
        block = got.tokens[k * len(PROMPTS) : (k + 1) * len(PROMPTS)]
        assert block.tolist() == alone.tokens.tolist(), f"candidate {k}: {c}"
        if k:  # the steering does change the text (the test has teeth)
            assert block.tolist() != got.tokens[: len(PROMPTS)].tolist(), f"candidate {k}"


def test_candidate_hooks_refuse_bad_layers_and_duplicates(tiny_llama):
    u = _unit(tiny_llama.config.d_model, 0)
    with pytest.raises(InputError, match="layer 5 out of range.*0..1"):
        st.candidate_hooks(tiny_llama, [[st.Steer(5, u, 1.0)]])
    with pytest.raises(InputError, match="two 'add' vectors at layer 0"):
        st.candidate_hooks(tiny_llama, [[st.Steer(0, u, 1.0, "add"), st.Steer(0, u, 2.0, "add")]])
    with pytest.raises(InputError, match="mode 'scale'"):
        st.candidate_hooks(tiny_llama, [[st.Steer(0, u, 1.0, "scale")]])
    with pytest.raises(InputError, match="3 prompts but 2"):
        st.generate_candidates(tiny_llama, PROMPTS, [[], []], 4)


def test_perplexity_matches_the_log_probabilities_of_run(tiny_llama):
    gen = mj.generate(tiny_llama, PROMPTS, 5, stop_tokens=())
    ppl = st.perplexity(tiny_llama, gen, batch_size=2)
    for i, p in enumerate(PROMPTS):
        seq = np.array([p + gen.tokens[i].tolist()], np.int32)
        lp = jax.nn.log_softmax(mj.run(tiny_llama, seq).logits[0].astype(jnp.float32), -1)
        nll = -np.array([lp[len(p) - 1 + t, seq[0, len(p) + t]] for t in range(5)])
        np.testing.assert_allclose(ppl[i], np.exp(nll.mean()), rtol=1e-4)
    some = st.perplexity(tiny_llama, gen, rows=[0, 2], batch_size=2)
    np.testing.assert_allclose(some[[0, 2]], ppl[[0, 2]], rtol=1e-6)
    assert np.isnan(some[1])


# ---------------------------------------------------------------------- on SmolLM2


@pytest.fixture(scope="module")
def smollm2():
    return mj.load("smollm2-135m")


@pytest.fixture(scope="module")
def lowercase_pairs():
    exs = st.data.format_examples("change_case:english_lowercase")
    keys = [e.key for e in st.data.format_examples()]
    vq, valq = st.data.split_base(2, 2, exclude_keys=keys)
    w, wo, _ = st.data.augmented_pairs(exs, vq)
    return w, wo, valq


@pytest.fixture(scope="module")
def vecs(smollm2, lowercase_pairs):
    w, wo, _ = lowercase_pairs
    return st.compute_vectors(smollm2, w, wo, layers=[10, 20])


@pytest.mark.slow
def test_vectors_are_mean_differences_at_the_last_token(smollm2, lowercase_pairs, vecs):
    w, wo, _ = lowercase_pairs
    again = st.compute_vectors(smollm2, w, wo, layers=[10, 20])
    assert np.array_equal(vecs.diff, again.diff)  # computed twice: identical
    # against one unpadded run per prompt
    site = "blocks.20.hook_resid_post"
    acts = []
    for q in (w[0], wo[0], w[1], wo[1]):
        ids = st.encode_prompts(smollm2, [q])[0]
        acts.append(np.asarray(mj.run(smollm2, np.array([ids]), capture=[site]).cache[site][0, -1]))
    want = ((acts[0] - acts[1]) + (acts[2] - acts[3])) / 2
    got = vecs.diff[vecs.index(20)]
    np.testing.assert_allclose(got, want, atol=2e-3 * np.abs(want).max())
    np.testing.assert_allclose(np.linalg.norm(vecs.direction, axis=-1), 1.0, atol=1e-5)
    u, c = vecs.at(20)
    np.testing.assert_allclose(c, (np.stack([acts[0], acts[2]]) @ u).mean(), rtol=1e-3)


@pytest.mark.slow
def test_vector_errors(smollm2, lowercase_pairs, vecs):
    w, wo, _ = lowercase_pairs
    with pytest.raises(InputError, match="equal counts: 2 with the instruction, 1 without"):
        st.compute_vectors(smollm2, w, wo[:-1])
    with pytest.raises(InputError, match="layer.*30.*0..29"):
        st.compute_vectors(smollm2, w, wo, layers=[30])
    with pytest.raises(
        InputError, match="no steering vector for layer 5; computed for layers \\[10, 20\\]"
    ):
        vecs.at(5)


@pytest.mark.slow
def test_layer_search_in_one_generation(smollm2, lowercase_pairs, vecs):
    _, _, valq = lowercase_pairs
    ids = [["change_case:english_lowercase"]] * len(valq)
    res = st.search_layer(smollm2, vecs, valq, ids, layers=[10, 20], max_new_tokens=8)
    assert res.candidates == (None, 10, 20)
    assert res.accuracy.shape == res.score.shape == (3,)
    assert res.perplexity.shape == (3, 2) and len(res.texts) == 3
    assert not res.degenerate[0]  # no steering is never filtered out
    assert res.best in res.candidates
    i = res.candidates.index(res.best)
    assert res.score[i] == res.score.max()
    # the unsteered candidate is the plain greedy generation
    plain = mj.generate(smollm2, st.encode_prompts(smollm2, valq), 8)
    assert res.texts[0] == plain.texts


@pytest.mark.slow
def test_weight_search_zero_weight_is_no_steering(smollm2, lowercase_pairs, vecs):
    _, _, valq = lowercase_pairs
    ids = [["change_case:english_lowercase"]] * len(valq)
    res = st.search_layer(
        smollm2, vecs, valq, ids, layers=[20], mode="add", weights=[0.0, 8.0], max_new_tokens=8
    )
    assert res.candidates == (None, 20, 20) and res.mode == "add"
    assert res.coeffs[1] == 0.0
    np.testing.assert_allclose(res.coeffs[2], 8.0 * vecs.norm[vecs.index(20)], rtol=1e-6)
    assert res.texts[1] == res.texts[0]  # w = 0: the text of no steering
    assert res.texts[2] != res.texts[0]  # a large weight does change it
    assert res.steer(vecs) == [] if res.best is None else res.steer(vecs)[0].layer == 20
    with pytest.raises(InputError, match="needs weights"):
        st.search_layer(smollm2, vecs, valq, ids, layers=[20], mode="add")


@pytest.mark.slow
def test_layer_search_refuses_unchecked_instructions_before_generating(
    smollm2, lowercase_pairs, vecs
):
    _, _, valq = lowercase_pairs
    with pytest.raises(st.ifeval.InstructionError, match="language:response_language"):
        st.search_layer(smollm2, vecs, valq, [["language:response_language"]] * 2, layers=[10])
    with pytest.raises(InputError, match="no steering vector for layer 12"):
        st.search_layer(smollm2, vecs, valq, [["change_case:english_lowercase"]] * 2, layers=[12])


def test_data_files_and_pairs():
    exs = st.data.format_examples()
    assert len(exs) == 163
    assert len(st.data.keyword_examples("include")) == 86
    assert len(st.data.keyword_examples("exclude")) == 117
    keys = {e.key for e in exs}
    vq, valq = st.data.split_base(20, 5, exclude_keys=keys)
    assert not set(vq) & set(valq)
    lower = st.data.format_examples("change_case:english_lowercase")
    w, wo, kw = st.data.augmented_pairs(lower, vq)
    assert all(a.startswith(b) and len(a) > len(b) for a, b in zip(w, wo))
    with pytest.raises(InputError, match="ids in the data"):
        st.data.format_examples("change_case:no_such")


@pytest.mark.slow
def test_cli_steer(capsys):
    from mechjax.cli.main import main

    assert main(["steer", "smollm2-135m", "Hi", "--instruction", "x:y", "--layer", "3"]) == 2
    assert "valid: change_case" in capsys.readouterr().err
    code = main(
        [
            "steer",
            "smollm2-135m",
            "Describe a cat.",
            "--instruction",
            "change_case:english_lowercase",
            "--layer",
            "31",
        ]
    )
    assert code == 2 and "layer 31 is out of range" in capsys.readouterr().err
    code = main(
        [
            "steer",
            "smollm2-135m",
            "Describe a cat.",
            "--instruction",
            "change_case:english_lowercase",
            "--layer",
            "12",
            "--pairs",
            "4",
            "-n",
            "6",
            "--check",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "--- unsteered" in out and "--- steered" in out
    assert "adjust_rs at layer 12" in out
