"""`mechjax circuit` on a checkpoint directory (tiny Llama fixture, induction pairs, which
need no tokenizer): the files it promises, and scores equal to the library's."""

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import mechjax as mj
from mechjax import circuits, metrics, tasks

FIXTURE = Path(__file__).parent / "fixtures" / "llama_mha"


def test_circuit_command_writes_scores_circuits_and_figures(tmp_path):
    out = tmp_path / "circ"
    cmd = [sys.executable, "-m", "mechjax.cli", "circuit", str(FIXTURE), "--task", "induction",
           "--method", "eap", "--n", "4", "--n-eval", "4", "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "CPR" in r.stdout and "CMD" in r.stdout
    for f in ("scores.npz", "circuits.npz", "faithfulness.json", "faithfulness.png", "circuit.png"):
        assert (out / f).exists(), f
    res = json.loads((out / "faithfulness.json").read_text())
    assert len(res["f_signed"]) == 10 and {"cpr", "cmd", "mean_f_signed"} <= set(res)
    model = mj.load(str(FIXTURE))
    b = tasks.induction(model.config.d_vocab, n=4, seed=0, half=6)
    ref, g = circuits.eap(model, jnp.asarray(b.clean), jnp.asarray(b.corrupted),
                          metrics.Negate(b.logit_diff()))  # fmt: skip
    saved = np.load(out / "scores.npz")
    np.testing.assert_allclose(saved["scores"], ref, atol=1e-5)
    circ = np.load(out / "circuits.npz")
    assert circ["signed"].shape == (10,) + g.valid.shape
    assert circ["absolute"][-1].sum() == g.n_edges
