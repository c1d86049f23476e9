"""The cognitive-biases reproduction end to end at smoke size on a 2-layer random Llama
with SmolLM2's tokenizer. A random model writes no right answers, so after the real
generation ran its texts are replaced: condition a answered right, condition b right
on every second pair only. The accuracies and tests in results.json must then be those
of that rule, computed here independently."""

import json

import pytest

import mechjax as mj
import mechjax.generation as G
from mechjax.analyses import cognitive_biases as repro
from mechjax.evals.stats import paired_t


def _answers_by_rule(real):
    settings = repro._settings(False, smoke=True)
    truth = {}
    for k, test in enumerate(repro.TESTS):
        for i, p in enumerate(repro.make_pairs(test, settings["n"], k)):
            truth[p.a.text] = (p.answer, True)
            truth[p.b.text] = (p.answer, i % 2 == 0)

    def fake(model, prompts, max_new_tokens, **kw):
        texts = real(model, prompts, max_new_tokens, **kw)  # the real generation runs
        out = []
        for prompt in prompts:
            problem = prompt.split("Q: ", 1)[1].split("\nA:", 1)[0]
            answer, right = truth[problem]
            out.append(f"{answer if right else answer + 1} apples.")
        assert len(texts) == len(prompts)
        return out

    return fake


@pytest.mark.slow
def test_smoke_run_writes_the_contract(tmp_path, monkeypatch, tiny_smollm2):
    monkeypatch.setattr(mj, "load", lambda name: tiny_smollm2)
    monkeypatch.setattr(G, "generate_texts", _answers_by_rule(G.generate_texts))
    out = tmp_path / "cb"
    argv = ["--out", str(out), "--smoke", "--models", "smollm2-135m", "--quiet"]
    assert repro.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True
    n = repro._settings(False, smoke=True)["n"]
    b = [i % 2 == 0 for i in range(n)]
    for test in repro.TESTS:
        r = res["smollm2-135m"][test]
        assert r["acc_a"] == 1.0 and r["acc_b"] == pytest.approx(sum(b) / n) and r["n"] == n
        assert r["p_value"] == pytest.approx(paired_t([True] * n, b).p_value)
        assert set(r["cot"]) == {"acc_a", "acc_b", "p_value", "n"}
    dm = res["digit_transformer"]["carry"]
    assert 0.0 <= dm["acc_a"] <= 1.0 and 0.0 <= dm["acc_b"] <= 1.0
    details = json.loads((out / "details.json").read_text())
    carry = details["smollm2-135m"]["direct"]["carry"]
    assert carry["only_a"] == n - sum(b) and carry["only_b"] == 0
    assert carry["n_unparsed_a"] == carry["n_unparsed_b"] == 0
    report = (out / "report.md").read_text()
    assert report.startswith("# Reproduction: Do Language Models Exhibit")
    assert "smoke run, numbers not meaningful" in report
    assert "## Digit-level transformer (trained here)" in report
    assert (out / "accuracy.png").exists()
    (out / "report.md").unlink()
    from mechjax.analyses.cognitive_biases import report as rep

    assert rep.main([str(out)]) == 0
    assert (out / "report.md").read_text() == report


def test_pairs_share_answers_and_one_operation():
    for k, test in enumerate(repro.TESTS):
        for p in repro.make_pairs(test, 6, k):
            assert p.a.answer == p.b.answer
            if test != "carry":
                assert len(p.a.world.relations) == 1
