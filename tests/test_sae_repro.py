"""The dense-latents reproduction end to end at smoke size (a 2-layer random Llama with
SmolLM2's tokenizer): the files of the reproduction contract, results.json's layout as
the issue gives it, the report regenerated from details.json alone."""

import json

import pytest

import mechjax as mj
from mechjax.analyses import dense_latents as repro


@pytest.mark.slow
def test_smoke_run_writes_the_contract(tmp_path, monkeypatch, tiny_smollm2):
    monkeypatch.setattr(mj, "load", lambda name: tiny_smollm2)
    out = tmp_path / "dense"
    assert repro.main(["--out", str(out), "--smoke", "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res) == {"topk", "abstopk", "retrain", "complete"} and res["complete"] is True
    assert set(res["topk"]) == {"n_dense", "median_antipodality_dense"}
    assert set(res["abstopk"]) == {"n_dense"}
    assert set(res["retrain"]) == {"dense_ablation", "sparse_ablation"}
    assert isinstance(res["topk"]["n_dense"], int) and isinstance(res["abstopk"]["n_dense"], int)
    details = json.loads((out / "details.json").read_text())
    assert details["site"] == "blocks.1.hook_resid_post" and details["complete"] is True
    assert len(details["topk"]["density"]) == 64 and 0 < details["topk"]["l0"] <= 4
    assert set(details["stage_seconds"]) >= {"harvest", "train topk", "train abstopk"}
    report = (out / "report.md").read_text()
    assert report.startswith("# Dense SAE latents") and "Fidelity:" in report.split("##")[0]
    assert "| ii |" in report
    for fig in ("density_histogram.png", "antipodality_vs_density.png"):
        assert (out / fig).exists()
    (out / "report.md").unlink()
    from mechjax.analyses.dense_latents import report as rep

    assert rep.main([str(out)]) == 0
    assert (out / "report.md").read_text() == report
