"""The coreference reproduction: synthetic documents with controlled chains, the
antecedent ranker on planted features, and the contract at smoke size."""

import json
import random

import numpy as np
import pytest

import mechjax as mj
from mechjax.analyses import coreference as repro
from mechjax.analyses.coreference import documents as D
from mechjax.analyses.coreference import predictor as P
from mechjax.evals import coref


def _norm(entities):
    return sorted(sorted(e) for e in entities)


@pytest.mark.parametrize("n_entities,chain", [(1, 1), (2, 3), (4, 8), (6, 16)])
def test_documents_hold_exact_chains_resolvable_from_the_text(n_entities, chain):
    for seed in range(40):
        doc = D.make_document(random.Random(seed), n_entities, chain, n_filler=seed % 7)
        assert [len(c) for c in doc.chains] == [chain] * n_entities
        assert sum(map(len, doc.sentences)) == len(doc.words)
        for m in doc.mentions:
            a, b = m.words
            surface = doc.text[m.chars[0] : m.chars[1]]
            assert " ".join(doc.words[a : b + 1]) == surface.replace(",", " ,")
            if m.kind == "pronoun":
                assert surface.lower() in ("he", "she", "him", "her")
        # the first mention of every entity is its name, in its introduction
        firsts = {}
        for m in doc.mentions:
            firsts.setdefault(m.entity, m)
        assert all(m.kind == "name" for m in firsts.values())
        assert _norm(D.rule_clusters(doc)) == _norm(doc.chains), seed
        assert len(doc.sentences) >= n_entities + doc.n_filler


def test_filler_lengthens_without_touching_the_chains():
    a = D.make_document(random.Random(3), 3, 4, n_filler=0)
    b = D.make_document(random.Random(3), 3, 4, n_filler=20)
    assert len(b.words) > len(a.words) + 20 * 4
    strip = lambda d: [m.kind for m in d.mentions]  # noqa: E731
    assert strip(a) == strip(b) and [e.name for e in a.entities] == [e.name for e in b.entities]
    with pytest.raises(ValueError, match="chain_length must be >= 1"):
        D.make_document(random.Random(0), 2, 0)


def test_token_spans_follow_offsets():
    doc = D.make_document(random.Random(0), 2, 2)
    # one "token" per character: every mention's span is its characters
    offsets = [(i, i + 1) for i in range(len(doc.text))]
    spans = P.token_spans(offsets, doc)
    assert spans == [(m.chars[0], m.chars[1] - 1) for m in doc.mentions]
    with pytest.raises(ValueError, match="has no token"):
        P.token_spans([(0, 1)], doc)


def _planted(doc, rng, m_pad=16, noise=0.3):
    """Features where one column is high exactly for the gold most-recent antecedent."""
    n = len(doc.mentions)
    feats = rng.uniform(0.0, 0.01, (m_pad, m_pad, 6)).astype(np.float32)
    last = {}
    for i, m in enumerate(doc.mentions):
        if m.entity in last:
            feats[i, last[m.entity], 2] = 0.5 + noise * rng.uniform()
        last[m.entity] = i
    kinds = np.zeros(m_pad, np.int32)
    ent = np.full(m_pad, -1, np.int32)
    for i, m in enumerate(doc.mentions):
        kinds[i], ent[i] = P.KINDS.index(m.kind), m.entity
    return P.DocFeatures(feats, n, kinds, ent, 100)


def test_ranker_learns_a_planted_antecedent_signal():
    rng = np.random.default_rng(0)
    docs = [D.make_document(random.Random(s), 3, 4) for s in range(12)]
    feats = [_planted(d, rng) for d in docs]
    scorer = P.fit_scorer(feats[:8], steps=200)
    assert np.argmax(np.abs(scorer.w / scorer.sd)) == 2
    key, resp = {}, {}
    for k, (d, f) in enumerate(zip(docs[8:], feats[8:])):
        ante = P.predict_antecedents(scorer, f)
        assert (ante < np.arange(len(ante))).all()  # only earlier mentions, or -1
        key[str(k)], resp[str(k)] = d.chains, P.clusters_of(ante, [m.words for m in d.mentions])
    assert coref.score_corpus(key, resp)["conll"].f1 == pytest.approx(1.0)
    # an untrained scorer (all zeros) opens a new entity at every mention
    zero = P.Scorer(np.zeros(6), np.zeros(3), scorer.mu, scorer.sd)
    assert (P.predict_antecedents(zero, feats[8]) == -1).all()


def test_clusters_of_links_best_first():
    assert P.clusters_of([-1, 0, -1, 1, 2], "abcde") == [["a", "b", "d"], ["c", "e"]]


@pytest.mark.slow
def test_smoke_run_writes_the_contract(tmp_path, monkeypatch, tiny_smollm2):
    monkeypatch.setattr(mj, "load", lambda name: tiny_smollm2)
    out = tmp_path / "coref"
    assert repro.main(["--out", str(out), "--smoke", "--quiet"]) == 0
    for name in ("report.md", "results.json", "details.json", "conll_f1.png", "head_weights.png"):
        assert (out / name).exists(), name
    assert not (out / "features").exists()
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True
    cells = {"c2_t64", "c2_t128", "c3_t64", "c3_t128"}
    assert set(res["cells"]) == cells
    for p in repro.PREDICTORS:
        assert set(res["conll_f1"][p]) == cells
        assert all(0.0 <= v <= 1.0 for v in res["conll_f1"][p].values())
    assert all(v == 1.0 for v in res["conll_f1"]["rule"].values())
    for c, stats in res["cells"].items():
        assert stats["tokens"] <= int(c.split("_t")[1])
    report = (out / "report.md").read_text()
    assert report.startswith("# Coreference in long documents")
    assert "Fidelity:" in report.split("\n\n")[1]
    from mechjax.analyses.coreference import report as rep

    (out / "report.md").unlink()
    assert rep.main([str(out)]) == 0
    assert (out / "report.md").read_text() == report


def test_bootstrap_resamples_documents_within_cells():
    from mechjax.analyses.coreference import report as rep

    same = {m: [[1.0, 2.0, 1.0, 2.0]] * 5 for m in ("muc", "bcub", "ceafe")}  # F1 0.5 each
    mixed = {m: [[2.0, 2.0, 2.0, 2.0], [0.0, 2.0, 0.0, 2.0]] * 3 for m in ("muc", "bcub", "ceafe")}
    details = {"results": {"a": {"x": {"doc_counts": same}, "y": {"doc_counts": mixed}}}}
    assert rep.bootstrap(details, [(1.0, "a", "x")]) == pytest.approx((0.5, 0.5))
    lo, hi = rep.bootstrap(details, [(1.0, "a", "y"), (-1.0, "a", "x")])
    assert lo < 0.0 < hi and hi - lo > 0.2  # documents of F1 1 and 0: a wide interval
    assert rep.bootstrap(details, [(1.0, "a", "missing")]) is None
    assert rep._verdict(0.1, (0.02, 0.2)) == "agrees"
    assert rep._verdict(0.1, (-0.02, 0.2)) == "same direction, within the noise"
    assert rep._verdict(-0.1, (-0.2, -0.01)).startswith("does not agree (the opposite")


def test_slope_weights_recover_a_planted_trend():
    from mechjax.analyses.coreference import report as rep

    f1 = {(2, 128): 0.9, (2, 256): 0.85, (2, 512): 0.8, (4, 256): 0.7, (4, 512): 0.65}
    details = {
        "cells": {f"c{c}_t{t}": {} for c, t in f1},
        "results": {
            "all_trained": {
                f"c{c}_t{t}": {"scores": {"conll": [0, 0, v]}} for (c, t), v in f1.items()
            }
        },  # fmt: skip
    }
    terms = rep.slope_terms(details, "all_trained", "length")
    assert sum(w * f1[(int(n[1:].split("_t")[0]), int(n.split("_t")[1]))] for w, _, n in terms) == (
        pytest.approx(-0.05)
    )
    # along chain length only the 256 and 512 columns have two chains: 0.7 - 0.85 per doubling
    terms = rep.slope_terms(details, "all_trained", "chain")
    got = sum(w * f1[(int(n[1:].split("_t")[0]), int(n.split("_t")[1]))] for w, _, n in terms)
    assert got == pytest.approx(-0.15)


def test_distance_gap_pools_cells():
    from mechjax.analyses.coreference import report as rep

    near_ok = [[4, 4], [0, 0], [0, 0], [1, 4]]  # per bin: hits, links
    details = {"results": {"p": {"a": {"distance_by_doc": [near_ok] * 3},
                                 "b": {"distance_by_doc": [near_ok] * 2}}}}  # fmt: skip
    value, ci = rep.distance_gap(details, "p")
    assert value == pytest.approx(0.25 - 1.0) and ci == pytest.approx((-0.75, -0.75))
    assert rep.distance_gap({"results": {}}, "p") is None
