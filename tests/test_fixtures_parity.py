"""Parity with HF transformers without torch: saved reference logits of tiny random models.

The fixtures in `tests/fixtures/<name>/` (HF `config.json` + `model.safetensors` +
`reference.npz` with tokens and HF logits) are written by `scripts/make_fixtures.py`.
Each is converted with its family's `config_from_hf` / `params_from_hf` and run through
`mechjax.run`; max |logit diff| must be <= 1e-4 (float32).
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import max_diff
from safetensors.numpy import load_file

import mechjax as mj
from mechjax.io.families import family_for

FIXTURES = Path(__file__).parent / "fixtures"
# Pinned, so a fixture that goes missing fails instead of silently not being tested.
NAMES = ["gpt2", "llama_mha", "llama_gqa_llama3_rope", "qwen2_bias_gqa", "mistral_sliding_window"]
TOL = 1e-4

run = jax.jit(mj.run, static_argnames=("capture",))


def load_fixture(name: str):
    """(Model, tokens, HF logits) of a fixture, read with safetensors and numpy only."""
    path = FIXTURES / name
    hf_config = json.loads((path / "config.json").read_text())
    family = family_for(hf_config["model_type"])
    cfg = family.config_from_hf(hf_config)
    params = family.params_from_hf(load_file(path / "model.safetensors"), cfg)
    with np.load(path / "reference.npz") as ref:
        return mj.Model(params, cfg, family), ref["tokens"], ref["logits"]


def test_fixture_set_is_complete():
    # tiny random models only; real-model references (smollm2/, ...) have their own tests
    tiny = [p.name for p in FIXTURES.iterdir() if (p / "model.safetensors").exists()]
    assert sorted(tiny) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_hf_reference(name):
    model, tokens, hf_logits = load_fixture(name)
    ours = np.asarray(run(model, tokens).logits)
    assert ours.shape == hf_logits.shape
    assert np.abs(ours - hf_logits).max() <= TOL, f"{name}: {max_diff(ours, hf_logits)}"
