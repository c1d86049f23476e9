"""mechjax.training: bit-identical resume, determinism, checkpoints as an axis, logs, errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mechjax import CheckpointError
from mechjax import training as T

OPT = optax.adam(1e-2)


def _params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(42))
    return {
        "dense": {"W": jax.random.normal(k1, (3, 4)), "b": jnp.zeros(4)},
        "blocks": [{"w": jax.random.normal(k2, (4,))}, {"w": jnp.ones(4)}],
    }


def loss_fn(p, batch, key):
    x, y = batch
    h = jnp.tanh(x @ p["dense"]["W"] + p["dense"]["b"])
    # the per-step key matters: dropout-like noise, so a wrong rng on resume shows up
    h = h * jax.random.bernoulli(key, 0.8, h.shape) / 0.8
    pred = h @ p["blocks"][0]["w"] + h @ p["blocks"][1]["w"]
    loss = jnp.mean((pred - y) ** 2)
    return loss, {"mse": loss, "pred_mean": pred.mean()}


def batch_fn(key, step):
    x = jax.random.normal(key, (16, 3))
    return x, jnp.sin(x).sum(-1)


STEP = T.make_train_step(loss_fn, OPT)  # one compilation for the whole file


def _run(tmp, **kw):
    kw.setdefault("steps", 30)
    kw.setdefault("seed", 7)
    return T.train(
        loss_fn, OPT, _params(), batch_fn, progress=False, step_fn=STEP, out_dir=tmp, **kw
    )


def _assert_trees_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and np.array_equal(x, y), f"max |diff| = {np.abs(x - y).max()}"


class Kill(Exception):
    pass


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    return tmp, _run(tmp, checkpoint_every=10)


def test_resume_after_exception_is_bit_identical(full_run, tmp_path):
    _, ref = full_run

    def kill_at_17(step, state, metrics):
        if step == 17:
            raise Kill

    with pytest.raises(Kill):
        _run(tmp_path, checkpoint_every=10, callbacks=[kill_at_17])
    assert T.checkpoint_steps(tmp_path) == [10]
    resumed = _run(tmp_path, checkpoint_every=10)
    assert resumed.history[0]["step"] == 11  # resumed from the checkpoint, not from 0
    _assert_trees_equal(resumed.state.params, ref.state.params)
    _assert_trees_equal(resumed.state.opt_state, ref.state.opt_state)
    _assert_trees_equal(resumed.state.rng, ref.state.rng)
    assert int(resumed.state.step) == 30


def test_resume_after_stop_is_bit_identical_and_logs_are_clean(full_run, tmp_path):
    ref_dir, ref = full_run
    _run(tmp_path, checkpoint_every=10, stop_after=25)  # killed after step 25: 21..25 lost
    resumed = _run(tmp_path, checkpoint_every=10)
    _assert_trees_equal(resumed.state.params, ref.state.params)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert rows == ref_rows


def test_deterministic_for_a_seed():
    def run(seed):
        return T.train(
            loss_fn, OPT, _params(), batch_fn, steps=8, seed=seed, progress=False, step_fn=STEP
        )

    a, b, c = run(3), run(3), run(4)
    _assert_trees_equal(a.state.params, b.state.params)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    wa, wc = a.state.params["dense"]["W"], c.state.params["dense"]["W"]
    diff = np.abs(np.asarray(wa) - np.asarray(wc))
    assert diff.max() > 1e-4


def test_checkpoint_stack_vmap_equals_loop(full_run):
    tmp, _ = full_run
    steps, stacked = T.load_checkpoint_stack(tmp, like=_params())
    assert steps.tolist() == [10, 20, 30]
    assert stacked["dense"]["W"].shape == (3, 3, 4)
    x, y = batch_fn(jax.random.PRNGKey(0), 0)

    def eval_loss(p, x, y):
        h = jnp.tanh(x @ p["dense"]["W"] + p["dense"]["b"])
        return jnp.mean((h @ p["blocks"][0]["w"] + h @ p["blocks"][1]["w"] - y) ** 2)

    batched = T.map_over_checkpoints(eval_loss, stacked, x, y)
    like = T.init_train_state(_params(), OPT, jax.random.PRNGKey(0))
    looped = [eval_loss(T.restore_checkpoint(tmp, like, step=int(s)).params, x, y) for s in steps]
    np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-6, atol=0)
    assert len(set(np.asarray(looped).tolist())) == 3  # three different checkpoints


def test_stack_without_template_keeps_structure(full_run):
    tmp, _ = full_run
    _, stacked = T.load_checkpoint_stack(tmp)
    assert isinstance(stacked["blocks"], list) and stacked["blocks"][1]["w"].shape == (3, 4)


def test_metrics_written_as_jsonl_and_csv(tmp_path):
    res = _run(
        tmp_path,
        steps=12,
        csv_log=True,
        flush_every=5,
        eval_every=4,
        eval_fn=lambda p: {"w_norm": jnp.linalg.norm(p["dense"]["W"])},
    )
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert set(rows[0]) == {"step", "loss", "mse", "pred_mean", "grad_norm"}
    assert all(isinstance(r["loss"], float) and np.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["loss"] == res.history[-1]["loss"]
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[0] == "step" and len(csv_lines) == 13
    evals = [json.loads(x) for x in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 4, 8, 12]


def test_mismatched_tree_is_a_clear_error(full_run, tmp_path):
    tmp, _ = full_run
    wrong_shape = _params()
    wrong_shape["dense"]["W"] = jnp.zeros((3, 5))
    with pytest.raises(CheckpointError, match="dense.W"):
        T.load_checkpoint_stack(tmp, like=wrong_shape)
    missing = _params()
    del missing["dense"]["b"]
    with pytest.raises(CheckpointError, match="only in the checkpoint"):
        T.load_checkpoint_stack(tmp, like=missing)
    _run(tmp_path, steps=10, checkpoint_every=5)
    with pytest.raises(CheckpointError, match="params"):  # resume with another model
        T.train(loss_fn, OPT, missing, batch_fn, steps=20, seed=7, out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="seed"):
        _run(tmp_path, steps=20, seed=8)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        T.load_checkpoint_stack(tmp_path / "empty_run_dir_that_does_not_exist")


def test_train_needs_a_loss_or_a_prebuilt_step():
    with pytest.raises(ValueError, match="loss_fn, or a prebuilt step_fn"):
        T.train(None, optax.sgd(0.1), {"w": jnp.zeros(2)}, lambda k, s: None, steps=1)
