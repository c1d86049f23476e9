"""The arithmetic-probes reproduction end to end at smoke size: the files of the
reproduction contract, results.json's promised layout, report.md quoting details.json.

The model is a 2-layer random Llama carrying SmolLM2's tokenizer. A random model writes no
sums, so the numbers it generates are replaced, after the real generation ran, by the
gold sum, or the gold sum plus one when the sum is a multiple of 3: every
stage then has right and wrong answers to probe. The numbers are not meaningful; the
plumbing is."""

import dataclasses
import json
import re

import jax
import numpy as np
import pytest

import mechjax as mj
from mechjax.analyses import arithmetic_probes as repro


@pytest.fixture(scope="module")
def tiny_with_tokenizer():
    real = mj.load("smollm2-135m")
    cfg = dataclasses.replace(
        real.config, n_layers=2, d_model=32, n_heads=2, n_kv_heads=1, d_head=16, d_mlp=64
    )
    params = real.family.init(jax.random.PRNGKey(0), cfg)
    return mj.Model(params, cfg, real.family, real.tokenizer)


def _sums_with_errors(real):
    def fake(model, prompts, n_new, batch):
        _, texts = real(model, prompts, n_new, batch)  # the real generation runs
        out = []
        for p in prompts:
            a, b = (int(v) for v in re.findall(r"(\d+) \+ (\d+) = $", p)[0])
            out.append(a + b + int((a + b) % 3 == 0))  # a third of the answers wrong
        return np.array(out), texts

    return fake


@pytest.mark.slow
def test_smoke_run_writes_the_contract(tmp_path, monkeypatch, tiny_with_tokenizer):
    monkeypatch.setattr(mj, "load", lambda name: tiny_with_tokenizer)
    monkeypatch.setattr(repro, "_greedy_numbers", _sums_with_errors(repro._greedy_numbers))
    out = tmp_path / "ap"
    code = repro.main(["--out", str(out), "--smoke", "--models", "smollm2-135m", "--quiet"])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True
    r = res["smollm2-135m"]
    assert set(r) >= {
        "best_layer",
        "error_detection_accuracy",
        "error_detection_auroc",
        "digit_accuracy_predicted",
        "digit_accuracy_gold",
    }
    assert len(r["digit_accuracy_predicted"]) == len(r["digit_accuracy_gold"]) == 2
    assert 0 <= r["best_layer"] < 2 and 0.0 <= r["error_detection_auroc"] <= 1.0
    details = json.loads((out / "details.json").read_text())
    assert details["complete"] is True and details["settings"]["smoke"] is True
    d = details["smollm2-135m"]["2-digit"]
    assert d["answers"]["n_kept"] == 48
    cot = d["cot"]
    assert cot["n_steps"] == 2 * cot["n_problems"] == 16
    sel = cot["reprompt"]["selective"]
    assert (
        sel["correct_steps_disturbed"] <= sel["correct_steps_reprompted"] <= sel["steps_reprompted"]
    )
    report = (out / "report.md").read_text()
    assert report.startswith("# Reproduction: Probing for Arithmetic Errors")
    assert "smoke run, numbers not meaningful" in report
    det = d["probes"]["detectors"]["correctness_probe"]
    assert f"accuracy {det['accuracy']:.3f} against a majority-class" in report
    assert (out / "smollm2-135m_2-digit_probes.png").exists()
    # the report regenerates from details.json alone
    (out / "report.md").unlink()
    from mechjax.analyses.arithmetic_probes import report as rep

    assert rep.main([str(out)]) == 0
    assert (out / "report.md").read_text() == report


def test_prompts_are_reproducible_and_end_before_the_first_digit():
    p1, ab1 = repro.addition_prompts("3-digit", 5, seed=3)
    p2, ab2 = repro.addition_prompts("3-digit", 5, seed=3)
    assert p1 == p2 and (ab1 == ab2).all()
    assert ab1.min() >= 100 and ab1.max() <= 999
    for p, (a, b) in zip(p1, ab1):
        assert p.endswith(f"\n{a} + {b} = ")
        assert p.count("\n") == repro.N_SHOTS
    assert repro.parse_answer(" 1234\n5") == 1234 and repro.parse_answer(" abc") == -1


def test_cot_problems_have_two_addition_steps_of_the_condition_size():
    for p in repro._cot_problems("3-digit", 6, seed=0):
        assert 100 <= p["a"] <= 549 and 100 <= p["b"] <= 549 and 100 <= p["c"] <= 999
        assert p["answer"] == p["a"] + p["b"] + p["c"]
        assert str(p["a"]) in p["text"] and str(p["c"]) in p["text"]
