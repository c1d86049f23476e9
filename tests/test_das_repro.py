"""The DAS reproduction end to end at smoke size (the toy model's smoke setting, a 2-layer
random Llama with SmolLM2's tokenizer): DAS finds the toy's variable at the right site
only, the files of the reproduction contract, results.json's promised layout, the report
quoting details.json and regenerating."""

import json

import pytest
from conftest import stop_resumed_run

import mechjax as mj
from mechjax.analyses import das as repro
from mechjax.analyses.das import toy


def check_toy_findings(res: dict) -> None:
    """DAS finds S at the right site only, in the toy's smoke setting (trained here, by the
    reproduction's smoke run, and nowhere else in the suite)."""
    assert res["model_acc_s"] == 1.0 and res["model_acc_y"] >= 0.99
    assert res["iia_right_site"] >= 0.95
    # chance is 1/9 (uniform among the 9 labels that differ from the base output); by
    # construction neither the wrong site nor the wrong variable (c, unseen at b) can beat
    # it in expectation; 0.5 leaves room for sampling noise and nothing else
    assert res["chance"] == pytest.approx(1 / 9)
    assert res["iia_wrong_site"] <= 0.5 and res["iia_wrong_variable"] <= 0.5
    assert res["iia_random_rotation_right_site"] <= 0.5
    assert res["per_seed"][0]["iia_wrong_variables"].keys() == {"c"}


@pytest.mark.slow
def test_smoke_run_writes_the_contract(tmp_path, monkeypatch, tiny_smollm2):
    import jax

    from mechjax import sae as S

    monkeypatch.setattr(mj, "load", lambda name: tiny_smollm2)
    # an SAE of the model's resid_post 0 (= resid_pre 1): SAE features at that site
    meta = S.SAEMeta(model_name="smollm2-135m", hook_name="blocks.0.hook_resid_post")
    sae_dir = S.save(
        S.init_sae(jax.random.PRNGKey(0), 32, 64, "topk", k=4, meta=meta), tmp_path / "sae"
    )
    out = tmp_path / "das"
    argv = ["--out", str(out), "--smoke", "--models", "smollm2-135m", "--quiet"]
    assert repro.main([*argv, "--sae", str(sae_dir)]) == 0
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
    assert details["toy"]["settings"] == json.loads(json.dumps(toy.SETTINGS["smoke"]))
    check_toy_findings(details["toy"])
    row = details["smollm2-135m"]["io_position"]
    # a random model answers few IOI prompts right: every pair is kept, and it says so
    assert row["filtered"] is False and (row["n_train"], row["n_test"]) == (32, 16)
    site = m["sae_site"]
    assert (site["site"], site["layer"]) == ("blocks.0.hook_resid_post", 1)
    for _, var in repro.VARIABLES:
        assert set(site[var]) == {"sae", "neurons_dbm", "das"}
        assert all(0.0 <= x <= 1.0 for x in site[var].values())
    report = (out / "report.md").read_text()
    assert report.startswith("# DAS and the causal-variable track")
    assert "SAE features are not better than neurons (smollm2-135m, io_name, layer 1)" in report
    assert "too few answered right" in report
    assert (out / "iia_per_layer.png").exists()
    (out / "report.md").unlink()
    from mechjax.analyses.das import report as rep

    assert rep.main([str(out)]) == 0
    assert (out / "report.md").read_text() == report
    # --resume keeps every finished featurizer and the toy model: nothing trains again
    logs: list[str] = []
    repro.reproduce(
        out, smoke=True, models=["smollm2-135m"], resume=True, log=logs.append, sae=sae_dir
    )
    assert not any("iia" in line or "[" in line for line in logs), logs
    assert json.loads((out / "results.json").read_text()) == res
    # a resumed run that stops in its first new stage still holds everything it kept
    from mechjax.causal import das as das_mod

    stop_resumed_run(monkeypatch, out, ("smollm2-135m", "io_name", "pca"), das_mod, "search")
    with pytest.raises(RuntimeError):
        repro.reproduce(
            out, smoke=True, models=["smollm2-135m"], resume=True, log=logs.append, sae=sae_dir
        )
    left = json.loads((out / "details.json").read_text())
    for var in ("io_position", "io_name"):
        for f in repro.FEATURIZERS:
            if (var, f) != ("io_name", "pca"):
                assert left["smollm2-135m"][var][f] == details["smollm2-135m"][var][f], (var, f)
    assert left["sae"] == details["sae"] and left["toy"] == details["toy"]
    # a resume with other settings is refused, naming them
    from mechjax.errors import InputError

    with pytest.raises(InputError, match="other settings .*k"):
        repro.reproduce(out, quick=True, models=["smollm2-135m"], resume=True, log=logs.append)


def test_an_sae_of_another_model_or_site_is_refused(tmp_path):
    import jax

    from mechjax import sae as S
    from mechjax.analyses.das import sae_site
    from mechjax.errors import InputError

    meta = S.SAEMeta(model_name="gpt2", hook_name="blocks.0.hook_resid_post")
    d = S.save(S.init_sae(jax.random.PRNGKey(0), 8, 16, "topk", k=2, meta=meta), tmp_path / "s")
    with pytest.raises(InputError, match="names model 'gpt2'.*smollm2-135m"):
        repro.reproduce(tmp_path / "o", smoke=True, models=["smollm2-135m"], sae=d)
    assert sae_site.resid_pre_layer("blocks.3.hook_resid_post", 30) == 4
    assert sae_site.resid_pre_layer("blocks.3.hook_resid_pre", 30) == 3
    with pytest.raises(InputError, match="residual"):
        sae_site.resid_pre_layer("blocks.3.hook_mlp_out", 30)
    with pytest.raises(InputError, match="residual"):
        sae_site.resid_pre_layer("blocks.29.hook_resid_post", 30)


def test_layers_of_spans_the_network():
    assert repro.layers_of(30, {"n_search_layers": 8}) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert repro.layers_of(18, {"n_search_layers": 4}) == [0, 6, 11, 17]
    assert repro.layers_of(2, {"n_search_layers": 5}) == [0, 1]
    by = {"n_search_layers": 6, "layers_by_model": {"gemma3-270m": 4}}
    assert repro.layers_of(18, by, "gemma3-270m") == [0, 6, 11, 17]
    assert repro.layers_of(30, by, "smollm2-135m") == [0, 6, 12, 17, 23, 29]


def test_sae_claim_is_untested_where_no_featurizer_finds_the_variable():
    """At a layer where SAE latents, neurons and DAS all stay at the no-intervention rate
    (1 - label_changes), 'SAE not better than neurons' holds trivially: the report says
    untested, not agrees."""
    from mechjax.analyses.das import report as R

    row = {"label_changes": 0.5625, "sae": 0.4375, "neurons_dbm": 0.4375, "das": 0.36}
    d = {"sae": {"m": {"layer": 16, "v": row}}}
    (line,) = R._sae_claims(d, ["m"])
    assert "untested" in line and "0.44" in line
    row["das"] = 0.8  # DAS finds it where SAE latents and neurons do not
    (line,) = R._sae_claims(d, ["m"])
    assert "agrees" in line and "untested" not in line
    row["sae"] = 0.9
    (line,) = R._sae_claims(d, ["m"])
    assert "does not agree" in line


def test_report_names_what_a_partial_run_lacks():
    from mechjax.analyses.das import report as R

    full = {f: [0.5] for f in repro.FEATURIZERS}
    d = {"a": {"io_position": full, "io_name": full}, "b": {"io_position": {"das": [0.2]}}}
    (line, _) = R._missing(d, {"models": ["a", "b"]})
    assert "io_position on b: boundless_das, pca, neurons_dbm" in line
    assert "io_name on b: das, boundless_das, pca, neurons_dbm" in line
    assert "the toy model" in line and "on a" not in line
    d["b"] = {"io_position": full, "io_name": full}
    d["toy"] = {"iia_right_site": 1.0}
    assert R._missing(d, {"models": ["a", "b"]}) == []
