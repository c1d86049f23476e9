"""The robustness reproduction end to end at smoke size on a 2-layer random Llama with
SmolLM2's tokenizer: the files of the reproduction contract, results.json's promised
layout, every pair accounted for (scored or skipped), the report quoting details.json."""

import json

import numpy as np
import pytest

import mechjax as mj
from mechjax.analyses import robustness as repro
from mechjax.evals import robustness as R


@pytest.mark.slow
def test_smoke_run_writes_the_contract(tmp_path, monkeypatch, tiny_smollm2):
    monkeypatch.setattr(mj, "load", lambda name: tiny_smollm2)
    out = tmp_path / "rob"
    assert repro.main(["--out", str(out), "--smoke", "--models", "smollm2-135m", "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True
    r = res["smollm2-135m"]
    assert set(r) == {"tce_n", "dce_n", "dce_s", "tce_t"}
    for e in r.values():
        assert e["ci"][0] <= e["mean"] <= e["ci"][1]
    details = json.loads((out / "details.json").read_text())
    assert details["complete"] is True
    settings = details["settings"]
    rows = details["smollm2-135m"]["by_steps"]["1"]
    assert set(rows) == set(R.ESTIMANDS) | set(repro.CONTROLS)
    for k, e in rows.items():  # every generated pair is scored or counted as skipped
        assert e["n"] + e["n_skipped"] == settings["n"], k
        if e["n"]:
            assert 0.0 <= e["prediction_changed"] <= 1.0 and e["total_variation"] <= 1.0
    # one problem length: the pooled estimands are those of the 1-operation pairs
    pooled = details["smollm2-135m"]["pooled"]
    assert pooled["tce_n"]["mean"] == pytest.approx(rows["tce_n"]["mean"])
    report = (out / "report.md").read_text()
    assert report.startswith("# Reproduction: A Causal Framework")
    assert "smoke run, numbers not meaningful" in report
    assert f"TCE(N -> R) {repro_ci(pooled['tce_n'])}" in report
    assert (out / "estimands.png").exists()
    (out / "report.md").unlink()
    from mechjax.analyses.robustness import report as rep

    assert rep.main([str(out)]) == 0
    assert (out / "report.md").read_text() == report


def repro_ci(e):
    from mechjax.analyses.robustness.report import _ci

    return _ci(e)


def test_measures_follow_the_definitions():
    p = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    q = np.array([[0.2, 0.6, 0.2], [0.1, 0.3, 0.6]])
    r, r_alt = [0, 2], [1, 2]
    m = repro.measures(p, q, r, r_alt, "tce_n", seed=0, n_boot=50)
    rcc = [0.5 * ((0.5 - 0.2) / 0.2 + (0.6 - 0.3) / 0.3), 0.5 * ((0.6 - 0.6) / 0.6 + 0)]
    assert m["mean"] == pytest.approx(np.mean(rcc))
    assert m["measure"] == "relative_confidence_change"
    assert m["prediction_changed"] == 0.5 and m["prediction_distance"] == 0.5
    assert m["base_accuracy"] == 1.0 and m["alt_accuracy"] == 1.0
    assert m["total_variation"] == pytest.approx(np.mean([0.3, 0.1]))
    c = repro.measures(p, q, r, r, "irrelevant", seed=0, n_boot=50)
    assert c["measure"] == "confidence_change"
    assert c["mean"] == pytest.approx(np.mean([(0.5 - 0.2) / 0.2, 0.0]))
    assert "odds_ratio_change" not in c


def test_pairs_are_reproducible_and_keep_or_change_the_result():
    a = repro.make_pairs(5, 2, seed=3, lo=2, hi=30)
    b = repro.make_pairs(5, 2, seed=3, lo=2, hi=30)
    assert {k: [x.alt.text for x in v] for k, v in a.items()} == {
        k: [x.alt.text for x in v] for k, v in b.items()
    }
    for kind, rows in a.items():
        changes = R.ESTIMANDS[kind][1] if kind in R.ESTIMANDS else False
        for x in rows:
            assert (x.base.answer != x.alt.answer) == changes, kind
            assert len(x.base.world.relations) == 2
