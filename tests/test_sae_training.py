"""SAE training: stores and token sources, resume after a kill, data parallel, evaluation.

Small random activations and the tiny random Llama of conftest, a few dozen steps: the
checks are of plumbing (same batches, same bits, same results on a mesh, metrics that
follow their definitions), not of SAE quality, which the dense-latents reproduction
measures on SmolLM2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mechjax import sae as S
from mechjax.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SITE = "blocks.0.hook_resid_post"


def _acts(n=512, d=16, seed=0):
    rng = np.random.RandomState(seed)
    basis = rng.normal(size=(48, d)).astype(np.float32)
    codes = rng.exponential(size=(n, 48)) * (rng.uniform(size=(n, 48)) < 0.08)
    return (codes @ basis + 0.01 * rng.normal(size=(n, d))).astype(np.float32)


CFG = S.SAETrainConfig(d_sae=48, k=4, steps=12, batch_size=64, lr=3e-3, warmup=2)


def _leaves_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_store_memory_and_disk_give_the_same_batches(tiny_llama, tmp_path):
    toks = np.random.RandomState(0).randint(0, 50, (12, 9))
    mem = S.ActivationStore.harvest(tiny_llama, toks, SITE, batch_size=4)
    disk = S.ActivationStore.harvest(
        tiny_llama, toks, SITE, batch_size=4, out_dir=tmp_path, shard_rows=40
    )
    assert mem.n == disk.n == 12 * 8 and len(disk.x_shards) > 1 and not disk.on_device
    reopened = S.ActivationStore.open(tmp_path)
    draw_m, draw_d = mem.batches(32, seed=1), reopened.batches(32, seed=1)
    for step in (0, 2, 3, 7):  # 3 batches per epoch: steps cross epochs
        bm, bd = draw_m(step), draw_d(step)
        np.testing.assert_array_equal(np.asarray(bm.x)[np.asarray(bm.idx)], np.asarray(bd.x))
    # every row once per epoch, a new order the next epoch
    idx = np.concatenate([np.asarray(draw_m(s).idx) for s in range(3)])
    assert sorted(idx.tolist()) == list(range(96))
    assert not np.array_equal(np.asarray(draw_m(3).idx), np.asarray(draw_m(0).idx))
    (tmp_path / "x_00001.npy").unlink()
    with pytest.raises(InputError, match="shard x_00001.npy is missing"):
        S.ActivationStore.open(tmp_path)


def test_on_the_fly_equals_the_store(tiny_llama):
    """Activations made inside the step train the same SAE as harvested ones."""
    toks = np.random.RandomState(1).randint(0, 50, (16, 9))
    src = S.TokenSource(tiny_llama, toks, SITE)
    cfg = CFG.replace(batch_size=32, steps=6)  # 4 sequences of 8 rows
    fly = S.train_sae(src, cfg, progress=False)
    # the same sequences, in the same order, harvested first
    from mechjax.sae.store import _Shuffle

    order = np.concatenate([_Shuffle(16, 4, cfg.seed)(s) for s in range(6)])
    store = S.ActivationStore.harvest(tiny_llama, toks[order], SITE, batch_size=8)
    rows = store.x_shards[0]
    fixed = S.ActivationStore(rows)
    fixed.batches = lambda b, seed=0: (
        lambda s: S.store.Acts(jnp.asarray(rows[s * 32 : (s + 1) * 32]))
    )
    sae0 = S.training.init_for(src, cfg, S.SAEMeta(hook_name=SITE))
    ref = S.train_sae(fixed, cfg, sae=sae0, progress=False)
    for a, b in zip(jax.tree.leaves(fly.sae), jax.tree.leaves(ref.sae)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    assert fly.sae.meta.hook_name == SITE


def test_resume_after_a_kill_is_bit_identical(tmp_path):
    store = S.ActivationStore(_acts())
    cfg = CFG.replace(arch="topk", aux_k=8, dead_steps=2)
    full = S.train_sae(store, cfg, out_dir=tmp_path / "a", checkpoint_every=4, progress=False)
    S.train_sae(
        store, cfg, out_dir=tmp_path / "b", checkpoint_every=4, stop_after=6, progress=False
    )
    resumed = S.train_sae(store, cfg, out_dir=tmp_path / "b", checkpoint_every=4, progress=False)
    _leaves_equal(full.sae, resumed.sae)
    _leaves_equal(full.stats, resumed.stats)
    rows = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert {"mse", "fvu", "l0", "dead_frac", "aux_loss"} <= set(rows[0])


@pytest.mark.parametrize("arch", ["topk", "jumprelu", "batchtopk"])
def test_training_constraints_and_tracking(arch):
    store = S.ActivationStore(_acts())
    cfg = CFG.replace(arch=arch, steps=30, threshold_init=0.05, bandwidth=0.05, l0=0.01)
    res = S.train_sae(store, cfg, eval_every=15, progress=False)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(res.sae.W_dec), axis=-1), 1.0, rtol=1e-5)
    fvu = [h["fvu"] for h in res.history]
    assert np.mean(fvu[-5:]) < np.mean(fvu[:3])  # it learns
    assert [e["step"] for e in res.evals] == [0, 15, 30] and res.evals[-1]["eval_fvu"] < res.evals[
        0
    ]["eval_fvu"]
    assert float(res.stats.tokens) == 30 * 64
    assert res.stats.density.shape == (48,) and 0 < float(res.stats.density.mean()) < 1
    if arch == "batchtopk":  # the inference threshold is the running average of the batches'
        thr = np.asarray(res.sae.threshold)
        assert (
            np.all(thr == thr[0])
            and thr[0] == pytest.approx(float(res.stats.threshold))
            and thr[0] > 0
        )
    if arch == "jumprelu":
        assert not np.allclose(np.asarray(res.sae.threshold), 0.05)  # trained through the STE


def test_evaluate_follows_its_definitions(tiny_llama):
    toks = np.random.RandomState(2).randint(0, 50, (6, 10))
    store = S.ActivationStore.harvest(tiny_llama, toks, SITE)
    res = S.train_sae(store, CFG.replace(steps=20, batch_size=32), progress=False)
    ev = S.evaluate(tiny_llama, res.sae, toks, batch_size=6)
    x = jnp.asarray(store.x_shards[0])
    rec = S.reconstruction(res.sae, x)
    assert ev["fvu"] == pytest.approx(float(rec.fvu), rel=1e-4)
    assert ev["l0"] == pytest.approx(float(rec.l0), rel=1e-5) and ev["l0"] <= 4
    assert ev["explained_variance"] == pytest.approx(1 - ev["fvu"])
    assert ev["ce_recovered"] == pytest.approx(
        (ev["ce_zero"] - ev["ce_sae"]) / (ev["ce_zero"] - ev["ce_clean"])
    )
    # the spliced CE against a hand-made splice through mj.run
    import mechjax as mj

    @jax.jit
    def hand_made(model, sae, tokens):
        acts = mj.run(model, tokens, capture=[SITE]).cache[SITE]
        patched = acts.at[:, 1:].set(sae(acts).recon[:, 1:])
        return mj.run(model, tokens, {SITE: mj.patch(patched)}).logits

    logits = hand_made(tiny_llama, res.sae, jnp.asarray(toks))
    lp = jax.nn.log_softmax(logits[:, 1:-1], -1)
    ce = -np.take_along_axis(np.asarray(lp), toks[:, 2:, None], -1).mean()
    assert ev["ce_sae"] == pytest.approx(float(ce), rel=1e-4)
    assert ev["n_tokens"] == 6 * 9 and ev["density"].shape == (48,)
    counts, edges, dead = S.density_histogram(ev["density"])
    assert counts.sum() + dead == 48 and dead == int((ev["density"] == 0).sum())


# ---------------------------------------------------------------- data parallel (2 devices)


def _child() -> None:
    from mechjax import sharding

    store = S.ActivationStore(_acts())
    cfg = CFG.replace(steps=6)
    one = S.train_sae(store, cfg, progress=False)
    mesh = sharding.make_mesh(data=2)
    two = S.train_sae(store, cfg, mesh=mesh, progress=False)
    diff = max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(jax.tree.leaves(one.sae), jax.tree.leaves(two.sae))
    )
    spread = len(two.sae.W_enc.sharding.device_set)
    print(json.dumps({"devices": jax.device_count(), "max_diff": diff, "spread": spread}))


def test_data_parallel_equals_one_device():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    code = "import sys; sys.path.insert(0, 'tests'); import test_sae_training as t; t._child()"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["spread"] == 2
    assert out["max_diff"] < 1e-4, out


def test_transcoder_trains_from_a_store_of_input_output_pairs():
    x = _acts(seed=3)
    w = np.random.RandomState(4).normal(size=(16, 10)).astype(np.float32)
    store = S.ActivationStore(x, np.maximum(x @ w, 0), site="a", site_out="b")
    res = S.train_sae(store, CFG.replace(steps=30, arch="relu", l1=1e-3, skip=True), progress=False)
    assert res.sae.is_transcoder and res.sae.W_skip is not None and res.sae.d_out == 10
    assert (res.sae.meta.hook_name, res.sae.meta.hook_name_out) == ("a", "b")
    assert np.mean([h["fvu"] for h in res.history[-5:]]) < res.history[0]["fvu"]


def test_token_rows_from_files(tmp_path):
    from mechjax import corpus

    (tmp_path / "a.txt").write_text("First paragraph here.\n\nSecond one.")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl").write_text('{"text": "doc one"}\n\n{"text": "doc two"}\n')
    assert corpus.read_documents(tmp_path) == [
        "First paragraph here.\n\nSecond one.", "doc one", "doc two",
    ]  # fmt: skip
    assert corpus.read_documents(tmp_path / "a.txt", split="paragraphs") == [
        "First paragraph here.", "Second one.",
    ]  # fmt: skip
    (tmp_path / "sub" / "c.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(InputError, match=r"c.jsonl:1: no string field 'text'"):
        corpus.read_documents(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        corpus.read_documents(tmp_path / "missing")
    arr = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(S.store.token_rows(None, arr), arr)
