"""Streamed harvesting: equal to one full run, one compiled program for every batch, clear
errors; the bounded top-k tracker equal to a brute-force sort; the context renderer."""

import io

import jax
import numpy as np
import pytest

import mechjax as mj
from mechjax import harvest as hv
from mechjax.errors import InputError, SiteError
from mechjax.io.families import family_of_module
from mechjax.models import toy

POST, PATTERN, RESID = (
    "blocks.1.mlp.hook_post",
    "blocks.0.attn.hook_pattern",
    "blocks.1.hook_resid_post",
)


@pytest.fixture(scope="module")
def corpus_tokens() -> np.ndarray:
    """Random tokens, each sequence with its own first token: no two (sequence, position)
    share a prefix, so a causal model gives no tied activations."""
    tokens = np.random.RandomState(1).randint(0, 50, (11, 9)).astype(np.int32)
    tokens[:, 0] = np.arange(20, 31)
    return tokens


# Harvest runs batches of other shapes than the one full run, so XLA may block the
# float32 matmuls differently: agreement to ~2e-5 on values up to ~20, never O(1).
TOL = dict(rtol=1e-5, atol=5e-5)


@pytest.fixture(scope="module")
def full(tiny_llama, corpus_tokens) -> dict:
    """Every site the tests read, from one run over all sequences at once."""
    cache = mj.run(tiny_llama, corpus_tokens, capture=[POST, PATTERN, RESID]).cache
    return {k: np.asarray(v) for k, v in cache.items()}


def test_harvest_equals_one_full_run_with_a_padded_last_batch(tiny_llama, corpus_tokens, full):
    out = hv.harvest(tiny_llama, corpus_tokens, [POST, PATTERN], batch_size=4)  # 4 + 4 + 3
    assert list(out) == [POST, PATTERN]
    for site in (POST, PATTERN):
        assert isinstance(out[site], np.ndarray) and out[site].shape == full[site].shape
        np.testing.assert_allclose(out[site], full[site], **TOL)


def test_positions_select_per_sequence_or_a_slice_on_the_right_axis(
    tiny_llama, corpus_tokens, full
):
    pos = np.array([0, 8, -1, 3, 4, 5, 6, 7, 2, 1, -9])
    out = hv.harvest(tiny_llama, corpus_tokens, [POST, PATTERN], batch_size=4, positions=pos)
    rows = np.arange(11)
    np.testing.assert_allclose(out[POST], full[POST][rows, pos % 9], **TOL)
    np.testing.assert_allclose(out[PATTERN], full[PATTERN][rows, :, pos % 9], **TOL)
    sl = hv.harvest(tiny_llama, corpus_tokens, [POST, PATTERN], positions=slice(2, 7, 2))
    np.testing.assert_allclose(sl[POST], full[POST][:, 2:7:2], **TOL)
    np.testing.assert_allclose(sl[PATTERN], full[PATTERN][:, :, 2:7:2], **TOL)
    several = np.stack([pos, (pos + 3) % 9, np.zeros(11, int)], axis=1)  # k = 3 per row
    k3 = hv.harvest(tiny_llama, corpus_tokens, [POST, PATTERN], batch_size=4, positions=several)
    want = several % 9
    np.testing.assert_allclose(k3[POST], full[POST][rows[:, None], want], **TOL)
    pat = np.stack([full[PATTERN][r, :, want[r]].transpose(1, 0, 2) for r in rows])
    np.testing.assert_allclose(k3[PATTERN], pat, **TOL)  # [n, heads, k, key]


def test_attention_mask_is_passed_through_per_batch(tiny_llama, corpus_tokens):
    mask = np.ones(corpus_tokens.shape, bool)
    mask[::2, 6:] = False
    ref = np.asarray(
        mj.run(tiny_llama, corpus_tokens, capture=[RESID], attention_mask=mask).cache[RESID]
    )
    out = hv.harvest(tiny_llama, corpus_tokens, RESID, batch_size=3, attention_mask=mask)
    np.testing.assert_allclose(out[RESID][mask], ref[mask], **TOL)


def test_one_compiled_program_serves_every_batch_and_a_second_corpus(tiny_llama, corpus_tokens):
    compiles = []
    listen = lambda event, secs, **kw: (
        compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
    )
    traces = hv.TRACE_COUNT["harvest"]
    hv.harvest(tiny_llama, corpus_tokens, RESID, batch_size=2, positions=slice(0, 5))  # 6 batches
    assert hv.TRACE_COUNT["harvest"] - traces <= 1
    traces = hv.TRACE_COUNT["harvest"]
    other = (corpus_tokens[::-1] + 1) % 50
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        hv.harvest(tiny_llama, other[:7], RESID, batch_size=2, positions=slice(0, 5))  # 4 batches
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert hv.TRACE_COUNT["harvest"] == traces and compiles == []


def test_harvest_errors_name_the_site_and_the_shapes(tiny_llama, corpus_tokens):
    with pytest.raises(SiteError, match="blocks.1.mlp.hook_posst"):
        hv.harvest(tiny_llama, corpus_tokens, "blocks.1.mlp.hook_posst")
    with pytest.raises(InputError, match=r"int \[11, k\].*shape \(3,\)"):
        hv.harvest(tiny_llama, corpus_tokens, POST, positions=np.array([1, 2, 3]))
    with pytest.raises(InputError, match="position 9 is outside the 9 positions"):
        hv.harvest(tiny_llama, corpus_tokens, POST, positions=np.full(11, 9))
    with pytest.raises(InputError, match=r"attention_mask.*\(11, 9\).*\(11, 8\)"):
        hv.harvest(tiny_llama, corpus_tokens, POST, attention_mask=np.ones((11, 8), bool))
    with pytest.raises(InputError, match=r"token id 50 is outside the vocabulary \[0, 50\)"):
        hv.top_activating(tiny_llama, np.full((2, 3), 50), 1, [0])
    with pytest.raises(InputError, match="int \\[n, pos\\]"):
        hv.harvest(tiny_llama, corpus_tokens[0], POST)


def test_top_activating_equals_a_brute_force_sort(tiny_llama, corpus_tokens, full):
    neurons = [0, 5, 47, 13]
    top = hv.top_activating(tiny_llama, corpus_tokens, 1, neurons, k=10, batch_size=4)
    assert top.values.shape == top.seq.shape == top.pos.shape == (4, 10)
    assert top.neurons == tuple((1, i) for i in neurons)
    acts = full[POST][..., neurons].reshape(-1, len(neurons))  # [seq * pos, neuron]
    for j in range(len(neurons)):
        order = np.argsort(-acts[:, j])[:10]
        head = np.sort(acts[:, j])[::-1][:11]
        assert np.all(np.diff(head) < 0)  # the top 10 and the 11th distinct: a unique answer
        np.testing.assert_array_equal(top.seq[j], order // 9)
        np.testing.assert_array_equal(top.pos[j], order % 9)
        np.testing.assert_allclose(top.values[j], acts[order, j], **TOL)
    # another site kind, given as a full name: the residual stream's units
    resid = hv.top_activating(tiny_llama, corpus_tokens, 1, [3], k=4, site=RESID, batch_size=5)
    order = np.argsort(-full[RESID][..., 3].reshape(-1))[:4]
    np.testing.assert_array_equal(resid.seq[0] * 9 + resid.pos[0], order)


def test_top_activations_streamed_in_small_batches_keep_only_k_and_respect_the_mask():
    rng = np.random.RandomState(0)
    acts = rng.randn(13, 5, 3).astype(np.float32)
    mask = rng.rand(13, 5) > 0.3
    tracker = hv.TopActivations([(0, 1), (0, 2), (2, 7)], k=6)
    for start in range(0, 13, 3):
        tracker.update(
            acts[start : start + 3], np.arange(start, min(start + 3, 13)), mask[start : start + 3]
        )
        assert tracker.values.shape == (6, 3)  # bounded: k rows, whatever was seen
    res = tracker.result()
    masked = np.where(mask[..., None], acts, -np.inf).reshape(-1, 3)
    for j in range(3):
        order = np.argsort(-masked[:, j])[:6]
        np.testing.assert_array_equal(res.seq[j] * 5 + res.pos[j], order)
        assert np.all(np.diff(res.values[j]) <= 0)
    small = hv.TopActivations([(0, 0)], k=50)
    small.update(acts[:2, :, :1], np.array([0, 1]))
    assert small.result().values.shape == (1, 10)  # k cut to what was seen
    with pytest.raises(InputError, match="k must be at least 1"):
        hv.TopActivations([(0, 0)], k=0)


def test_top_activating_errors_give_the_valid_ranges(tiny_llama, corpus_tokens):
    with pytest.raises(
        InputError, match=r"neuron 48 is out of range for blocks.1.mlp.hook_post: valid 0..47"
    ):
        hv.top_activating(tiny_llama, corpus_tokens, 1, [3, 48])
    with pytest.raises(InputError, match=r"layer 2 is out of range: valid 0..1"):
        hv.top_activating(tiny_llama, corpus_tokens, 2, [3])
    with pytest.raises(SiteError, match="per-head|units"):
        hv.top_activating(tiny_llama, corpus_tokens, 1, [0], site="attn.hook_z")
    cfg = toy.ToyConfig(d_model=16, n_layers=1, n_heads=2, d_head=8, d_vocab=50, n_ctx=16)
    attn_only = mj.Model(toy.init(jax.random.PRNGKey(0), cfg), cfg, family_of_module("toy"))
    with pytest.raises(SiteError, match="no site 'blocks.0.mlp.hook_post'"):
        hv.top_activating(attn_only, corpus_tokens, 0, [0])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_context_marks_the_token_within_the_window(tiny_llama, corpus_tokens):
    row = corpus_tokens[2]
    text = hv.context(tiny_llama, corpus_tokens, 2, 4, before=2, after=1, stream=io.StringIO())
    assert text == f"#{row[2]} #{row[3]} [[#{row[4]}]] #{row[5]}"
    start = hv.context(tiny_llama, corpus_tokens, 2, 0, before=5, after=0, ansi=False)
    assert start == f"[[#{row[0]}]]"
    bold = hv.context(tiny_llama, corpus_tokens, 2, 8, before=1, stream=_Terminal())
    assert bold == f"#{row[7]} \x1b[1m#{row[8]}\x1b[0m"
    with pytest.raises(InputError, match="outside the tokens"):
        hv.context(tiny_llama, corpus_tokens, 11, 0)
