"""The entropy-neurons reproduction end to end on SmolLM2-135M at smoke size: the files of
the reproduction contract, results.json's promised keys, and report.md quoting them."""

import json

import numpy as np
import pytest

from mechjax.analyses import entropy_neurons


@pytest.mark.slow
def test_smoke_run_writes_the_contract(tmp_path):
    out = tmp_path / "en"
    code = entropy_neurons.main(
        ["--out", str(out), "--smoke", "--models", "smollm2-135m", "--quiet"]
    )
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True and res["settings"]["smoke"] is True
    r = res["smollm2-135m"]
    for key in (
        "entropy_neurons",
        "ln_mediated_fraction_top",
        "ln_mediated_fraction_random",
        "token_frequency_neurons",
    ):
        assert key in r
    assert len(r["entropy_neurons"]) == 10 and all(l == 29 for l, _ in r["entropy_neurons"])
    a = r["ablations"]
    frac = np.asarray(a["ln_mediated_fraction"])
    assert r["ln_mediated_fraction_top"] == pytest.approx(frac[:10].mean(), abs=1e-4)
    assert r["ln_mediated_fraction_random"] == pytest.approx(frac[20:].mean(), abs=1e-4)
    # the entropy neurons are the top-rho ones, so their rho beats the median neuron's
    assert min(r["weights"]["rho_top"]) > r["weights"]["rho_median"]
    report = (out / "report.md").read_text()
    assert report.startswith("# Confidence regulation neurons")
    assert "Fidelity:" in report.split("\n\n")[1]
    assert "| Paper's claim | Ours | Agrees |" in report
    assert f"random mean {r['ln_mediated_fraction_random']:.3f}" in report
    assert f"entropy neurons (top rho) mean {r['ln_mediated_fraction_top']:.3f}" in report
    for fig in ("smollm2-135m_norm_logitvar.png", "smollm2-135m_rho.png"):
        assert (out / fig).stat().st_size > 10_000
