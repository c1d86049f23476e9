"""The steering reproduction end to end at smoke size: the files of the reproduction
contract, results.json's promised layout, and report.md quoting details.json.

The model is a 4-layer random Llama carrying SmolLM2's tokenizer and chat template, so
every stage (vectors, layer search, four conditions, length, keywords, composition) runs
on real prompts in seconds; the numbers are not meaningful, the plumbing is."""

import dataclasses
import json

import jax
import pytest

import mechjax as mj
from mechjax.analyses import steering as repro


@pytest.fixture(scope="module")
def tiny_with_tokenizer():
    real = mj.load("smollm2-135m")
    cfg = dataclasses.replace(
        real.config, n_layers=4, d_model=64, n_heads=4, n_kv_heads=2, d_head=16, d_mlp=128
    )
    params = real.family.init(jax.random.PRNGKey(0), cfg)
    return mj.Model(params, cfg, real.family, real.tokenizer)


@pytest.mark.slow
def test_smoke_run_writes_the_contract(tmp_path, monkeypatch, tiny_with_tokenizer):
    monkeypatch.setattr(mj, "load", lambda name: tiny_with_tokenizer)
    out = tmp_path / "steering"
    code = repro.main(["--out", str(out), "--smoke", "--models", "smollm2-135m", "--quiet"])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True
    rows = res["smollm2-135m"]
    assert set(rows) == {
        "change_case:english_lowercase",
        "keywords:existence",
        "keywords:forbidden_words",
    }
    for r in rows.values():
        assert set(r) == {"no_instr", "instr", "steer", "instr_steer", "layer"}
        assert all(0.0 <= r[c] <= 1.0 for c in ("no_instr", "instr", "steer", "instr_steer"))
    details = json.loads((out / "details.json").read_text())
    assert details["complete"] is True and details["settings"]["smoke"] is True
    d = details["smollm2-135m"]
    low = d["format"]["change_case:english_lowercase"]
    assert low["search"]["candidates"] == [None, 1]
    assert rows["change_case:english_lowercase"]["layer"] == low["layer"]
    assert len(d["length"]["mean_words"]) == len(d["length"]["alphas"])
    assert set(d["composition"]) >= {"none", "format", "length", "both"}
    report = (out / "report.md").read_text()
    assert report.startswith("# Reproduction: Improving Instruction-Following")
    assert "smoke run, numbers not meaningful" in report
    assert "| claim (paper) | ours | agrees? |" in report
    assert f"| {low['n_eval']} | {low['no_instr']:.2f} | {low['instr']:.2f} |" in report
    # the report regenerates from details.json alone
    (out / "report.md").unlink()
    from mechjax.analyses.steering import report as rep

    assert rep.main([str(out)]) == 0
    assert (out / "report.md").read_text() == report
    # --resume keeps every finished stage: nothing runs again, the same results
    logs: list[str] = []
    repro.reproduce(out, smoke=True, models=["smollm2-135m"], resume=True, log=logs.append)
    assert json.loads((out / "results.json").read_text()) == res
    assert any("kept from the earlier run" in m for m in logs)
    assert not any(m.strip().startswith("[smollm2-135m:") for m in logs)  # no stage ran
    with pytest.raises(mj.MechjaxError, match="no checkable format examples for .'no:such'.*valid"):
        repro.reproduce(out, smoke=True, models=["smollm2-135m"], instructions=["no:such"])
    with pytest.raises(mj.MechjaxError, match="other settings .*differ"):
        repro.reproduce(out, quick=True, models=["smollm2-135m"], resume=True, log=logs.append)
