"""Causal mediation: `ie_grid` and `causal_effect` against the formulas computed here by
hand (numpy softmax over single patched forwards), on a tiny random model."""

import numpy as np
import pytest
from conftest import jrun

import mechjax as mj
from mechjax import mediation
from mechjax.tasks import TaskBatch

CANDIDATES = np.arange(10, 20, dtype=np.int32)  # stand-ins for the number tokens 0..9


def _batch(seed=0, n=3, pos=6):
    rs = np.random.RandomState(seed)
    clean = rs.randint(0, 50, (n, pos)).astype(np.int32)
    corrupted = clean.copy()
    corrupted[:, 1] = rs.randint(0, 50, n)  # the "operand" positions differ
    corrupted[:, 3] = rs.randint(0, 50, n)
    answers = rs.choice(CANDIDATES, n).astype(np.int32)
    wrongs = np.asarray([rs.choice([c for c in CANDIDATES if c != a]) for a in answers], np.int32)
    return TaskBatch(clean, corrupted, answers, wrongs, {}, ("",) * n, ("",) * n, "test")


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _p(logits, answers, wrongs, candidates):
    """P(answer), P(wrong) at the last position; softmax over `candidates` if given."""
    last = np.asarray(logits)[:, -1]
    if candidates is None:
        p = _softmax(last)
        a, w = answers, wrongs
    else:
        p = _softmax(last[:, candidates])
        a = np.asarray([list(candidates).index(x) for x in answers])
        w = np.asarray([list(candidates).index(x) for x in wrongs])
    rows = np.arange(len(answers))
    return p[rows, a], p[rows, w]


@pytest.mark.parametrize("candidates", [None, CANDIDATES], ids=["full-vocab", "numbers"])
def test_ie_grid_equals_single_patched_forwards(tiny_llama, candidates):
    batch = _batch()
    grids = mediation.ie_grid(tiny_llama, batch, candidates=candidates)
    L, P = tiny_llama.config.n_layers, batch.clean.shape[1]
    assert set(grids) == {"attn_out", "mlp_out"}
    p_r, p_alt = _p(jrun(tiny_llama, batch.clean).logits, batch.answers, batch.wrongs, candidates)
    for kind in ("attn_out", "mlp_out"):
        g = np.asarray(grids[kind])
        assert g.shape == (L, P)
        for layer, pos in [(0, 1), (1, 3), (1, P - 1), (0, 0)]:
            site = f"blocks.{layer}.hook_{kind}"
            base = np.asarray(jrun(tiny_llama, batch.clean, capture=[site]).cache[site])
            alt = np.asarray(jrun(tiny_llama, batch.corrupted, capture=[site]).cache[site])
            patched = base.copy()
            patched[:, pos] = alt[:, pos]
            logits = jrun(tiny_llama, batch.clean, {site: mj.patch(patched)}).logits
            ps_r, ps_alt = _p(logits, batch.answers, batch.wrongs, candidates)
            ie = 0.5 * ((p_r - ps_r) / ps_r + (ps_alt - p_alt) / p_alt)
            assert abs(g[layer, pos] - ie.mean()) <= 1e-5 * max(1.0, abs(ie.mean())), (
                kind,
                layer,
                pos,
                g[layer, pos],
                ie.mean(),
            )
    # position 0 is identical in both prompts, so patching it changes nothing
    np.testing.assert_allclose(np.asarray(grids["mlp_out"])[:, 0], 0.0, atol=1e-5)


def test_causal_effect_matches_formulas(tiny_llama):
    batch = _batch(seed=1, n=4)
    p = _softmax(np.asarray(jrun(tiny_llama, batch.clean).logits)[:, -1][:, CANDIDATES])
    q = _softmax(np.asarray(jrun(tiny_llama, batch.corrupted).logits)[:, -1][:, CANDIDATES])
    r = np.asarray([list(CANDIDATES).index(x) for x in batch.answers])
    r2 = np.asarray([list(CANDIDATES).index(x) for x in batch.wrongs])
    rows = np.arange(len(r))
    pr, qr, pr2, qr2 = p[rows, r], q[rows, r], p[rows, r2], q[rows, r2]

    tce = mediation.causal_effect(tiny_llama, batch, CANDIDATES, result_changes=True)
    want = (0.5 * ((pr - qr) / qr + (qr2 - pr2) / pr2)).mean()
    assert abs(tce["rcc"] - want) <= 1e-5 * max(1.0, abs(want))
    dce = mediation.causal_effect(tiny_llama, batch, CANDIDATES, result_changes=False)
    want = np.maximum((pr - qr) / qr, (qr - pr) / pr).mean()
    assert abs(dce["rcc"] - want) <= 1e-5 * max(1.0, abs(want))
    a, b = p.argmax(-1), q.argmax(-1)
    assert tce["changed"] == pytest.approx((a != b).mean())
    assert tce["abs_diff"] == pytest.approx(np.abs(a - b).mean())


def test_identical_prompts_have_no_effect(tiny_llama):
    batch = _batch(seed=2)
    same = TaskBatch(
        batch.clean,
        batch.clean.copy(),
        batch.answers,
        batch.wrongs,
        {},
        batch.clean_text,
        batch.clean_text,
        "same",
    )
    eff = mediation.causal_effect(tiny_llama, same, CANDIDATES)
    assert abs(eff["rcc"]) <= 1e-6 and eff["changed"] == 0.0
    grids = mediation.ie_grid(tiny_llama, same, kinds=("mlp_out",), candidates=CANDIDATES)
    np.testing.assert_allclose(np.asarray(grids["mlp_out"]), 0.0, atol=1e-5)


def test_answers_outside_the_candidates_are_named(tiny_llama):
    batch = _batch()
    bad = TaskBatch(
        batch.clean,
        batch.corrupted,
        np.asarray([1, 2, 3], np.int32),
        batch.wrongs,
        {},
        batch.clean_text,
        batch.corrupted_text,
        "bad",
    )
    with pytest.raises(ValueError, match="answers.*not among the 10 candidate"):
        mediation.ie_grid(tiny_llama, bad, candidates=CANDIDATES)
    with pytest.raises(ValueError, match="answers.*not among the 10 candidate"):
        mediation.causal_effect(tiny_llama, bad, CANDIDATES)


def test_mismatched_batches_and_unknown_kinds(tiny_llama):
    batch = _batch()
    short = TaskBatch(
        batch.clean,
        batch.corrupted[:, :-1],
        batch.answers,
        batch.wrongs,
        {},
        batch.clean_text,
        batch.corrupted_text,
        "short",
    )
    with pytest.raises(ValueError, match="shape"):
        mediation.causal_effect(tiny_llama, short, CANDIDATES)
    with pytest.raises(Exception, match="mlp_outt"):
        mediation.ie_grid(tiny_llama, batch, kinds=("mlp_outt",))


def test_number_token_ids_on_smollm2_tokenizer():
    from mechjax.io import gguf as gguf_io
    from mechjax.io import registry
    from mechjax.io.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf_metadata(
        gguf_io.read_gguf_metadata(registry.resolve("smollm2-135m", progress=False))
    )
    ids = mediation.number_token_ids(tok)
    assert ids.shape == (10,) and len(set(ids.tolist())) == 10
    assert [tok.decode([int(i)]) for i in ids] == [str(d) for d in range(10)]


def test_ie_per_pair_spreads_one_grid_cell(tiny_llama):
    """Per-pair IE of one mediator: each pair's value is the hand formula over a single
    patched forward of that pair alone, and the mean is the grid's cell."""
    batch = _batch(seed=2, n=4)
    grid = np.asarray(
        mediation.ie_grid(tiny_llama, batch, ("mlp_out",), candidates=CANDIDATES)["mlp_out"]
    )
    per = mediation.ie_per_pair(tiny_llama, batch, "mlp_out", 1, 3, candidates=CANDIDATES)
    assert per.shape == (4,)
    assert abs(per.mean() - grid[1, 3]) <= 1e-5 * max(1.0, abs(grid[1, 3]))
    site = "blocks.1.hook_mlp_out"
    for i in range(4):
        one = TaskBatch(
            batch.clean[i : i + 1],
            batch.corrupted[i : i + 1],
            batch.answers[i : i + 1],
            batch.wrongs[i : i + 1],
            {},
            ("",),
            ("",),
            "test",
        )
        p_r, p_alt = _p(jrun(tiny_llama, one.clean).logits, one.answers, one.wrongs, CANDIDATES)
        base = np.array(jrun(tiny_llama, one.clean, capture=[site]).cache[site])
        alt = np.asarray(jrun(tiny_llama, one.corrupted, capture=[site]).cache[site])
        base[:, 3] = alt[:, 3]
        ps_r, ps_alt = _p(
            jrun(tiny_llama, one.clean, {site: mj.patch(base)}).logits,
            one.answers,
            one.wrongs,
            CANDIDATES,
        )
        ie = 0.5 * ((p_r - ps_r) / ps_r + (ps_alt - p_alt) / p_alt)
        assert abs(per[i] - ie[0]) <= 1e-5 * max(1.0, abs(ie[0])), (i, per[i], ie[0])
    with pytest.raises(ValueError, match="pos 9 outside the prompts' 6 positions"):
        mediation.ie_per_pair(tiny_llama, batch, "mlp_out", 1, 9, candidates=CANDIDATES)
    with pytest.raises(Exception, match="blocks.7.hook_mlp_out"):
        mediation.ie_per_pair(tiny_llama, batch, "mlp_out", 7, 3, candidates=CANDIDATES)
