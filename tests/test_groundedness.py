"""The groundedness analogue: the MiniLM judge's pieces (calibration, accuracy, judging
sentences), the invented world's string-match ground truth, answer cutting, and the
reproduction end to end at smoke size (a 2-layer random Llama with SmolLM2's tokenizer
answering, the real MiniLM judging)."""

import json

import numpy as np
import pytest

import mechjax as mj
from mechjax.analyses import groundedness as repro
from mechjax.analyses.groundedness import facts as F
from mechjax.errors import InputError
from mechjax.evals import grounding as G


def test_calibrate_finds_the_separating_threshold():
    scores = np.array([0.9, 0.8, 0.75, 0.4, 0.3, 0.7])
    labels = np.array([True, True, True, False, False, False])
    cal = G.calibrate(scores, labels)
    assert 0.7 < cal.threshold < 0.75 and cal.balanced_accuracy == 1.0 and cal.n_pairs == 6
    acc = G.accuracy(scores, labels, 0.5, ["a", "a", "b", "b", "b", "b"])
    assert acc["accuracy"] == pytest.approx(5 / 6) and acc["a"] == 1.0 and acc["b"] == 0.75
    assert acc["balanced_accuracy"] == pytest.approx((1.0 + 2 / 3) / 2)
    with pytest.raises(InputError, match="both"):
        G.calibrate(scores, np.ones(6, bool))


def test_world_ground_truth_by_string_match():
    orgs = F.make_world(12, seed=1)
    names = F.invented_values(orgs)
    assert len(set(names)) == len(names) == 48
    o, other = orgs[0], orgs[1]
    doc = F.document(o)
    assert all(o.fact(a) in doc for a in F.ATTRIBUTES)
    assert F.supported(f"{o.org.capitalize()} was set up in {o.founded}.", [doc], names) is True
    assert F.supported(f"It was founded in {other.founded}.", [doc], names) is False
    assert F.supported(f"It employs {int(o.staff):,} people.", [doc], names) is True  # 1,234
    assert (
        F.supported(f"{o.founder} founded {other.org}.", [doc, F.document(other)], names) is False
    )
    assert F.supported("I hope this helps.", [doc], names) is None
    cite = f"Document 1: {o.org.capitalize()} was set up in {o.founded}."  # not the value 1
    assert F.supported(cite, [doc], names) is True
    assert F.values_in("As documents 1 and 2 say, it is so.", names) == set()
    qs = F.questions(orgs[:10])
    assert sorted(q.attribute for q in qs) == sorted(list(F.ATTRIBUTES) * 2)
    assert all(q.gold == q.org.fact(q.attribute) and q.gold not in q.text for q in qs)
    claims, sources, labels, kinds = F.calibration_pairs(orgs[:3], orgs[3:], seed=0)
    assert len(claims) == 12 and kinds[:4] == ["paraphrase", "swap", "other", "generic"]
    truth = [F.supported(c, s, names) for c, s in zip(claims, sources)]
    assert [t is True for t in truth] == list(labels)  # the string match agrees with the labels


def test_cut_answer_keeps_the_answer_part():
    text = "It was founded in 1900. It is in Rome.\nAnswer: again.\nQuestion: more"
    assert repro.cut_answer(text, hit_budget=False) == "It was founded in 1900. It is in Rome."
    assert repro.cut_answer("First one. Second one is cut", hit_budget=True) == "First one."
    assert repro.cut_answer("First one. Second one is cut", hit_budget=False).endswith("cut")
    assert repro.cut_answer("Para one.\n\nPara two.", hit_budget=False) == "Para one."


@pytest.mark.slow
def test_smoke_run_writes_the_contract(tmp_path, monkeypatch, tiny_smollm2):
    real = mj.load
    monkeypatch.setattr(mj, "load", lambda n: real(n) if n == repro.ENCODER else tiny_smollm2)
    out = tmp_path / "g"
    assert repro.main(["--out", str(out), "--smoke", "--models", "smollm2-135m", "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True and 0.0 <= res["retrieval_accuracy"] <= 1.0
    assert set(res["smollm2-135m"]) == {*repro.DECODINGS, "comparisons"}
    assert set(res["judge"]["held_out"]) >= {"accuracy", "paraphrase", "swap", "other", "generic"}
    details = json.loads((out / "details.json").read_text())
    answers = details["smollm2-135m"]["answers"]["greedy"]
    assert len(answers) == details["task"]["n_questions"] == 4
    report = (out / "report.md").read_text()
    assert report.startswith("# Groundedness") and "**Fidelity: low" in report
    assert "| claim (paper) | ours | verdict |" in report
    assert (out / "grounded_fraction.png").stat().st_size > 1000
    (out / "report.md").unlink()
    from mechjax.analyses.groundedness import report as rep

    assert rep.main([str(out)]) == 0
    assert (out / "report.md").read_text() == report
    # the judging and the rates on hand-written answers (the random model writes none)
    settings = repro._settings(False, smoke=True)
    enc = G.SentenceEncoder(real(repro.ENCODER))
    task = repro.build_task(settings, enc)
    q = task["questions"][0]
    one = {**task, "questions": [q, q], "retrieved": [[F.document(q.org)]] * 2}
    good = f"The answer is {q.gold}. {F.GENERIC[0]}"
    bad = f"The answer is {q.gold}, since 1234567 said so."
    judged = repro.judge_answers(one, [good, bad], enc, 0.5, tiny_smollm2.tokenizer, settings)
    assert [len(a["sentences"]) for a in judged] == [2, 1]
    assert [s["supported"] for s in judged[0]["sentences"]] == [True, None]
    assert judged[1]["sentences"][0]["supported"] is False
    summary = repro.summarize(judged)
    assert summary["em"] == 1.0 and summary["n_em_plus"] == 2
    assert summary["em_plus_supported_truth"] == 0.5 and summary["n_checkable"] == 2
