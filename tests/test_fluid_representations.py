"""The fluid-representations analogue: traces tokenised with the right positions, the
similarity measures on constructed vectors, the verb-overwrite intervention against a
hand-patched run, and the reproduction end to end at smoke size (a 2-layer random Llama
with SmolLM2's tokenizer)."""

import json

import numpy as np
import pytest

import mechjax as mj
from mechjax.analyses import fluid_representations as repro
from mechjax.analyses.fluid_representations import measures as M
from mechjax.analyses.fluid_representations import sequences as S
from mechjax.tasks import blocksworld as B


def test_traces_mark_every_verb_predicate_and_query(tiny_smollm2):
    tok = tiny_smollm2.tokenizer
    walk = S.walks(1, 5, seed=3)[0]
    for naming in (B.STANDARD, B.MYSTERY, B.random_naming(4)):
        t = S.tokenize(walk, naming, tok)
        assert len(t.query) == len(t.verb) == len(t.answer) == len(t.ends) == 5
        assert list(t.answer) == [B.ACTIONS.index(a.name) for _, a in walk]
        for q, v, a in zip(t.query, t.verb, t.answer):
            assert tok.decode(t.tokens[q : q + 1]) == ":" and v > q
            assert tok.decode(t.tokens[q + 1 : v + 1]).strip() == naming.word(B.ACTIONS[a])
        n_facts = sum(len(s) for s in [s for s, _ in walk] + [B.apply(*walk[-1])])
        assert len(t.pred_pos) == n_facts and set(t.pred_step) == set(range(6))
        for p, c in zip(t.pred_pos[:4], t.pred_concept[:4]):
            assert tok.decode(t.tokens[: p + 1]).endswith(naming.word(B.PREDICATES[c]))
        assert tok.decode(t.tokens[t.ends[-1] - 1 : t.ends[-1]]) in (".\n", "\n")
    c = S.verb_candidates(B.MYSTERY, tok)
    assert len(set(c.tolist())) == 4
    with pytest.raises(ValueError, match="share a first token"):
        S.verb_candidates(B.Naming("x", {**B.MYSTERY.words, "stack": "attack"}), tok)


def test_similarity_measures_on_constructed_vectors():
    rng = np.random.default_rng(0)
    concept = rng.normal(size=(4, 16))
    shared = rng.normal(size=(3, 16)) * 5  # per bin, common to every concept
    noise = np.linspace(2.0, 0.0, 3)  # concepts sharpen over the bins

    def rep(seed):
        r = np.random.default_rng(seed)
        return (concept[:, None] + shared[None] + noise[None, :, None] * r.normal(size=(4, 3, 16)))[
            None
        ]

    a, b = rep(1), rep(2)
    inn = M.in_naming(a)[0]
    assert inn.shape == (2,) and inn[1] > inn[0]
    cross = M.cross_naming(a, b)
    assert cross["gap"].shape == (1, 3) and cross["gap"][0, -1] > cross["gap"][0, 0] > -0.5
    assert cross["same"][0, -1] == pytest.approx(1.0, abs=1e-6)  # identical vectors at the end
    scores = np.array([[[0.0, 0.0, 0.0, 1.0], [0.0, 2.0, 1.0, 0.0]]])
    four, two = M.accuracy(scores, np.array([[0, 2]]))
    assert four.tolist() == [[False, False]] and two.tolist() == [[False, False]]
    four, two = M.accuracy(scores, np.array([[3, 1]]))
    assert four.tolist() == [[True, True]] and two.tolist() == [[True, True]]


def test_patched_scores_equal_a_hand_patched_run(tiny_smollm2):
    """Overwriting the verbs' residual stream through `patched_scores` equals mj.run with
    an explicit patch at those positions (one trace), and no vectors equals the harvest."""
    tok = tiny_smollm2.tokenizer
    t = S.tokenize(S.walks(1, 4, seed=1)[0], B.MYSTERY, tok)
    cands = S.verb_candidates(B.MYSTERY, tok)
    d = tiny_smollm2.config.d_model
    vecs = np.random.default_rng(0).normal(size=(3, d)).astype(np.float32)
    got = M.patched_scores(tiny_smollm2, [t], 3, 1, [vecs], cands, batch=1)[0]
    toks = t.tokens[None, : t.ends[2]]
    site = "blocks.1.hook_resid_post"
    hooks = {site: [mj.patch(vecs[j], positions=[int(t.verb[j])]) for j in range(3)]}
    logits = np.asarray(mj.run(tiny_smollm2, toks, hooks).logits)[0]
    want = logits[t.query[:3]][:, cands]
    np.testing.assert_allclose(got, want, atol=2e-4)
    clean = M.harvest_traces(tiny_smollm2, [t], [1], cands, batch=1)[0]["scores"][:3]
    plain = M.patched_scores(tiny_smollm2, [t], 3, 1, [None], cands, batch=1)[0]
    np.testing.assert_allclose(plain, clean, atol=2e-4)
    np.testing.assert_allclose(
        clean, np.asarray(mj.run(tiny_smollm2, toks).logits)[0][t.query[:3]][:, cands], atol=2e-4
    )


@pytest.mark.slow
def test_smoke_run_writes_the_contract(tmp_path, monkeypatch, tiny_smollm2):
    monkeypatch.setattr(mj, "load", lambda name: tiny_smollm2)
    out = tmp_path / "f"
    assert repro.main(["--out", str(out), "--smoke", "--models", "smollm2-135m", "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True
    m = res["smollm2-135m"]
    assert set(m["accuracy"]) == {"standard", "mystery", "random-0"}
    for row in m["interventions"].values():
        assert set(row) == {"clean", "inject_late", "inject_late_wrong", "inject_early",
                            "replace_standard", "replace_standard_wrong"}  # fmt: skip
        for cond in ("inject_late", "replace_standard"):
            c = row[cond]["two_change"]
            assert c["ci"][0] <= c["mean"] <= c["ci"][1] and 0 <= row[cond]["two"] <= 1
    report = (out / "report.md").read_text()
    assert report.startswith("# Fluid representations") and "**Fidelity: low" in report
    assert "| claim (paper) | ours | verdict |" in report
    assert (out / "fluid_representations.png").stat().st_size > 1000
    (out / "report.md").unlink()
    from mechjax.analyses.fluid_representations import report as rep

    assert rep.main([str(out)]) == 0
    assert (out / "report.md").read_text() == report
