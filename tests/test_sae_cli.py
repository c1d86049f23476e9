"""`mechjax sae train|eval` end to end on the 2-layer random Llama with SmolLM2's
tokenizer (conftest's tiny_smollm2) and a slice of the offline corpus."""

from __future__ import annotations

import json

import pytest

import mechjax as mj
from mechjax import sae as S
from mechjax.cli.main import main


@pytest.mark.slow  # the tiny model carries SmolLM2's tokenizer (a fetched model)
def test_sae_train_then_eval(tmp_path, monkeypatch, tiny_smollm2, capsys):
    monkeypatch.setattr(mj, "load", lambda name: tiny_smollm2)
    out = tmp_path / "run"
    args = ["sae", "train", "smollm2-135m", "--site", "blocks.1.hook_resid_post", "--d-sae", "64",
            "--k", "4", "--steps", "6", "--warmup", "1", "--batch-size", "64", "--ctx-len", "17",
            "--n-chunks", "40", "--eval-every", "3", "--checkpoint-every", "3", "--store", "disk",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    sae = S.load(out / "sae")
    assert (sae.arch, sae.d_sae, sae.meta.hook_name) == ("topk", 64, "blocks.1.hook_resid_post")
    ev = json.loads((out / "eval.json").read_text())
    assert 0 < ev["l0"] <= 4 and "ce_recovered" in ev and len(ev["density"]) == 64
    assert (out / "activations" / "index.json").exists()
    assert [json.loads(l)["step"] for l in (out / "eval.jsonl").read_text().splitlines()] == [
        0,
        3,
        6,
    ]
    capsys.readouterr()
    assert main(["sae", "eval", str(out / "sae"), "smollm2-135m", "--ctx-len", "17", "--n-chunks", "8",
                 "--out", str(tmp_path / "ev.json"), "--quiet"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "ce_recovered" in printed and "fvu" in printed
    # the SAE's recorded site has another width on a model it was not trained for
    wide = S.init_sae(__import__("jax").random.PRNGKey(0), 48, 64, "topk", k=2,
                      meta=S.SAEMeta(hook_name="blocks.1.hook_resid_post"))  # fmt: skip
    S.save(wide, tmp_path / "wide")
    assert (
        main(["sae", "eval", str(tmp_path / "wide"), "smollm2-135m", "--n-chunks", "2", "--quiet"])
        == 2
    )
    assert "width mismatch" in capsys.readouterr().err


@pytest.mark.slow
def test_model_samples_token_source(tiny_smollm2):
    rows = S.store.model_samples(tiny_smollm2, 3, 9, seed=0, batch=2)
    assert rows.shape == (3, 9) and rows.dtype.name == "int32"
    assert rows.min() >= 0 and rows.max() < tiny_smollm2.config.d_vocab
    assert rows[0, 0] == tiny_smollm2.tokenizer.token_to_id("<|endoftext|>")
