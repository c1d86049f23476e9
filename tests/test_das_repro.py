"""The DAS reproduction end to end at smoke size (the toy model's smoke setting, a 2-layer
random Llama with SmolLM2's tokenizer): the files of the reproduction contract,
results.json's promised layout, the report quoting details.json and regenerating."""

import json

import pytest

import mechjax as mj
from mechjax.analyses import das as repro


@pytest.mark.slow
def test_smoke_run_writes_the_contract(tmp_path, monkeypatch, tiny_smollm2):
    monkeypatch.setattr(mj, "load", lambda name: tiny_smollm2)
    out = tmp_path / "das"
    assert repro.main(["--out", str(out), "--smoke", "--models", "smollm2-135m", "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True
    assert set(res["toy"]) == {"iia_right_site", "iia_wrong_site", "iia_wrong_variable"}
    m = res["smollm2-135m"]
    assert m["layers"] == [0, 1]
    for _, var in repro.VARIABLES:
        assert set(m[var]) == set(repro.FEATURIZERS)
        for f, xs in m[var].items():
            assert len(xs) == 2 and all(0.0 <= x <= 1.0 for x in xs), (var, f)
    details = json.loads((out / "details.json").read_text())
    row = details["smollm2-135m"]["io_position"]
    # a random model answers few IOI prompts right: every pair is kept, and it says so
    assert row["filtered"] is False and (row["n_train"], row["n_test"]) == (32, 16)
    report = (out / "report.md").read_text()
    assert report.startswith("# DAS and the causal-variable track")
    assert "too few answered right" in report
    assert (out / "iia_per_layer.png").exists()
    (out / "report.md").unlink()
    from mechjax.analyses.das import report as rep

    assert rep.main([str(out)]) == 0
    assert (out / "report.md").read_text() == report
    # --resume keeps every finished featurizer and the toy model: nothing trains again
    logs: list[str] = []
    repro.reproduce(out, smoke=True, models=["smollm2-135m"], resume=True, log=logs.append)
    assert not any("iia" in line or "[" in line for line in logs), logs
    assert json.loads((out / "results.json").read_text()) == res
    # a resume with other settings is refused, naming them
    from mechjax.errors import InputError

    with pytest.raises(InputError, match="other settings .*k"):
        repro.reproduce(out, quick=True, models=["smollm2-135m"], resume=True, log=logs.append)


def test_layers_of_spans_the_network():
    assert repro.layers_of(30, {"n_search_layers": 8}) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert repro.layers_of(18, {"n_search_layers": 4}) == [0, 6, 11, 17]
    assert repro.layers_of(2, {"n_search_layers": 5}) == [0, 1]
