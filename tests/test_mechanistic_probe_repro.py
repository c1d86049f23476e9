"""The mechanistic-probe reproduction end to end at smoke size (tiny GPT-2 and Llama
configs, no download): the files of the reproduction contract, results.json's promised
keys and their relations, and report.md quoting them."""

import json

import numpy as np
import pytest

from mechjax.analyses import mechanistic_probe
from mechjax.analyses.mechanistic_probe import tasks


@pytest.mark.slow  # compiles the training step, the probe's kNN and two harvests (~30 s)
def test_smoke_run_writes_the_contract(tmp_path):
    out = tmp_path / "mp"
    assert mechanistic_probe.main(["--out", str(out), "--smoke", "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] is True and res["settings"]["smoke"] is True
    for key in ("s_p1", "s_p2", "s_p1_random", "s_p2_random"):
        assert isinstance(res[key], float) and np.isfinite(res[key])
    ref = res["probe"]["reference"]
    f1 = ref["f1"]
    want = (f1["trained"]["f1_p1"] - f1["init"]["f1_p1"]) / (1 - f1["init"]["f1_p1"])
    assert res["s_p1"] == pytest.approx(want)
    want = (f1["random"]["f1_p2"] - f1["init"]["f1_p2"]) / (1 - f1["init"]["f1_p2"])
    assert res["s_p2_random"] == pytest.approx(want)
    assert len(ref["trained"]["s_p1_layers"]) == res["settings"]["n_layers"]
    c = res["causal"]
    assert len(c["accuracy_random"]) == len(c["accuracy_min_entropy_pos"]) == 9
    assert np.asarray(c["entropy_pos"]).shape == (2, 2)
    assert len(res["smollm2"]["scores"]["s_p1_layers"]) == 2
    report = (out / "report.md").read_text()
    assert report.startswith("# MechanisticProbe")
    assert "Fidelity:" in report.split("\n\n")[1]
    assert "| Paper's claim | Ours | Agrees |" in report
    assert f"S_P1 = {res['s_p1']:.3f}, S_P2 = {res['s_p2']:.3f}" in report
    for fig in ("s_per_layer.png", "head_ablation.png", "smollm2_s_per_layer.png"):
        assert (out / fig).stat().st_size > 10_000


def test_proof_task_trees_and_spans():
    encode = tasks.word_encoder(97)
    task = tasks.proof_task(encode, 6, n_statements=7, seed=3)
    assert task.spans.shape == (6, 7, 2) and task.depth.shape == (6, 7)
    for i in range(6):
        d = task.proof_depth[i]
        # the proof: a fact at depth d, one rule per depth d-1..0; the rest are distractors
        assert sorted(task.depth[i][task.depth[i] >= 0]) == list(range(d + 1))
        assert (task.depth[i] == -1).sum() == 7 - (d + 1)
        ids = task.tokens[i, : task.query[i] + 1]
        assert task.mask[i].sum() == len(ids) and task.spans[i, -1, 1] <= len(ids)
        assert np.all(task.spans[i, 1:, 0] == task.spans[i, :-1, 1])  # contiguous statements
        assert task.spans[i, 0, 0] == 1  # the first token (the attention sink) left out
    text = task.texts[0]
    root = [s for s in text.split(". ") if "then they are" in s]
    assert text.endswith("True or False? Answer:") and root


def test_kth_smallest_batch_is_a_function_of_the_key():
    import jax

    a = tasks.kth_smallest_batch(jax.random.PRNGKey(3), 5, 8, 20, 2)
    b = tasks.kth_smallest_batch(jax.random.PRNGKey(3), 5, 8, 20, 2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], np.sort(np.asarray(a[0]), 1)[:, 2])
