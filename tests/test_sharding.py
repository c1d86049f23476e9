"""Sharded runs give the single-device results: forward, cache, sweep, attribution, training.

XLA creates virtual CPU devices only if `--xla_force_host_platform_device_count` is set
before JAX starts, and other test modules start JAX in this pytest process first. So the
8-device checks run in one subprocess (this file run as a script), which prints its
measurements as JSON; each test asserts on them. Tolerance: |sharded - single| <=
1e-5 * (1 + |single|) in float32 (the sums are reduced in another order across devices).

The multi-process tests run `mechjax.launch` with 2 processes x 4 devices on loopback.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5
# Less LLVM optimisation: compiles take about half the time; numerics are unchanged
# (XLA's CPU backend does not enable fast-math either way).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
CAPTURE = (
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.1.hook_resid_post",
    "blocks.1.mlp.hook_post",
)
ATTR_SITES = ("blocks.0.hook_resid_pre", "blocks.1.attn.hook_z")


# ------------------------------------------------------------------ the 8-device child


def _diff(a, b) -> dict:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = np.abs(a - b)
    return {
        "max": float(d.max()),
        "mean": float(d.mean()),
        "ok": a.shape == b.shape and bool(np.all(d <= TOL * (1 + np.abs(b)))),
    }


def _spec(x) -> list:
    return [e if e is None or isinstance(e, str) else list(e) for e in x.sharding.spec]


def _loss(params, tokens, key, *, cfg):
    """Next-token cross-entropy of the tiny Llama (the static config is bound by partial)."""
    import jax.numpy as jnp
    import optax

    from mechjax.models import llama

    logits = llama.forward(params, tokens[:, :-1], cfg)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
    return loss, {"loss_again": loss * jnp.ones(())}


def _child() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import mechjax as mj
    from mechjax import sharding as S
    from mechjax.launch import check_problem, logit_diff
    from mechjax.training import init_train_state, make_train_step

    assert jax.device_count() == 8, jax.devices()
    res: dict = {"seconds": {}}
    clock = [time.perf_counter()]

    def lap(name):  # wall-clock seconds per part, reported by the tests for the record
        now = time.perf_counter()
        res["seconds"][name] = round(now - clock[0], 2)
        clock[0] = now

    model, tokens, values = check_problem()
    mesh = S.make_mesh(data=2, sweep=2, model=2)
    sm, st = S.shard_model(model, mesh), S.shard_batch(tokens, mesh)
    res["W_Q_spec"] = _spec(sm.params["blocks"][0]["attn"]["W_Q"])
    res["W_E_spec"] = _spec(sm.params["embed"]["W_E"])

    lap("setup")

    # forward and cache
    forward = jax.jit(mj.run, static_argnames="capture")
    ref = forward(model, tokens, capture=CAPTURE)
    lap("forward, 1 device (compile + run)")
    out = forward(sm, st, capture=CAPTURE)
    lap("forward, 8 devices (compile + run)")
    res["logits"] = _diff(out.logits, ref.logits)
    res["cache"] = {k: _diff(out.cache[k], ref.cache[k]) for k in CAPTURE}

    # activation-patching sweep: values on `sweep`, params on `model`
    site = "blocks.1.hook_resid_pre"
    ref_sweep = S.patching_sweep(site, logit_diff, positions=[2, 5])(model, tokens, values)
    sweep = S.patching_sweep(site, logit_diff, positions=[2, 5], mesh=mesh)
    got = sweep(sm, st, S.shard_sweep(values, mesh))
    res["sweep"] = _diff(got, ref_sweep)
    res["sweep_spec"] = _spec(got)
    lap("patching sweep, 1 and 8 devices")

    # attribution: gradients w.r.t. zero deltas, prompt sets on `sweep`, batch on `data`
    sets = jnp.stack([tokens, jnp.flip(tokens, axis=1)])  # [2, batch, pos]
    ref_attr = S.attribution(ATTR_SITES, logit_diff)(model, sets)
    attr = S.attribution(ATTR_SITES, logit_diff, mesh=mesh)(
        sm, S.shard_batch(sets, mesh, axes=("sweep", "batch"))
    )
    res["attr_metric"] = _diff(attr.metric, ref_attr.metric)
    res["attr_grads"] = {k: _diff(attr.grads[k], ref_attr.grads[k]) for k in ATTR_SITES}
    res["attr_grad_nonzero"] = float(np.abs(np.asarray(ref_attr.grads[ATTR_SITES[0]])).max())
    lap("attribution, 1 and 8 devices")

    # training: data parallel (batch on `data`) x tensor parallel, Adam state ZeRO-sharded.
    # One layer keeps the two compiles short. Adam divides by sqrt(v) + eps, which turns
    # rounding noise in a near-zero gradient into an O(lr) step; eps=1e-4 bounds that
    # amplification so the comparison tests the sharding, not float32 cancellation.
    model1 = check_problem(n_layers=1)[0]
    tmesh = S.make_mesh(data=4, model=2)
    batches = [
        jnp.asarray(np.random.RandomState(i).randint(0, 64, (8, 9)), jnp.int32) for i in range(3)
    ]
    opt = optax.adam(1e-3, eps=1e-4)
    state = init_train_state(model1.params, opt, jax.random.PRNGKey(1))
    loss = functools.partial(_loss, cfg=model1.config)
    step = make_train_step(loss, opt)
    sstate = S.shard_state(state, tmesh)
    sstep = S.sharded_train_step(loss, opt, sstate, tmesh)
    losses, slosses = [], []
    for b in batches:
        state, m = step(state, b)
        sstate, sm_ = sstep(sstate, S.shard_batch(b, tmesh))
        losses.append(float(m["loss"]))
        slosses.append(float(sm_["loss"]))
    res["train_loss"] = _diff(np.array(slosses), np.array(losses))
    res["train_losses"] = losses
    res["train_params"] = _diff(
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(sstate.params)]),
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)]),
    )
    mu = sstate.opt_state[0].mu["blocks"][0]["attn"]["W_Q"]
    res["mu_spec"] = _spec(mu)
    res["mu_shard_shape"] = list(mu.addressable_shards[0].data.shape)
    res["param_spec_after"] = _spec(sstate.params["blocks"][0]["attn"]["W_Q"])
    lap("3 training steps, 1 and 8 devices")

    # a mesh axis that does not divide a sharded dimension
    for name, fn in [
        ("bad_model", lambda: S.shard_model(model, S.make_mesh(data=1, model=8))),
        ("bad_batch", lambda: S.shard_batch(tokens[:3], mesh)),
    ]:
        try:
            fn()
            res[name] = None
        except S.ShardingError as e:
            res[name] = str(e)
    lap("bad meshes")
    return res


# ------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def child() -> dict:
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}",
        JAX_PLATFORMS="cpu",
    )
    proc = subprocess.run(
        [sys.executable, __file__], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ok(d: dict, what: str) -> None:
    assert d["ok"], f"{what}: max |diff| = {d['max']:.3g}, mean |diff| = {d['mean']:.3g}"


def test_params_are_sharded_by_rules(child):
    assert child["W_Q_spec"] == ["model", None, None]
    assert child["W_E_spec"] == ["model", None]


def test_sharded_forward_equals_single_device(child):
    _ok(child["logits"], "logits")


def test_sharded_cache_equals_single_device(child):
    for site, d in child["cache"].items():
        _ok(d, site)


def test_sharded_patching_sweep_equals_single_device(child):
    _ok(child["sweep"], "sharded sweep")
    assert child["sweep_spec"] == ["sweep"]


def test_sharded_attribution_equals_single_device(child):
    _ok(child["attr_metric"], "metric")
    for site, d in child["attr_grads"].items():
        _ok(d, site)
    assert child["attr_grad_nonzero"] > 1e-4


def test_sharded_training_equals_single_device(child):
    _ok(child["train_loss"], "losses")
    _ok(child["train_params"], "params after 3 Adam steps")
    losses = child["train_losses"]
    assert losses[-1] < losses[0], losses
    # Adam's moments: heads on `model` (2) and, ZeRO-1, d_model on `data` (4)
    assert child["mu_spec"] == ["model", "data", None]
    assert child["mu_shard_shape"] == [2, 8, 8]  # of [4, 32, 8]
    assert child["param_spec_after"] == ["model", None, None]


def test_bad_mesh_names_parameter_dimension_and_axis(child):
    msg = child["bad_model"]
    assert msg is not None, "a model axis of 8 over 4 heads was accepted"
    for part in (
        "blocks[0].attn.W_Q",
        "'heads'",
        "size 4",
        "mesh axis 'model' of size 8",
        "'kv_heads'",
        "size 2",
        "replicate(",
    ):
        assert part in msg, msg
    msg = child["bad_batch"]
    assert msg is not None and "'batch'" in msg and "size 3" in msg and "'data'" in msg, msg


def _launch(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    t = time.perf_counter()
    env = dict(os.environ, XLA_FLAGS=FAST_COMPILE, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "launch_multihost.py"), "--quiet", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return proc, time.perf_counter() - t


def test_two_processes_match_single_process():
    proc, secs = _launch(
        "--num-processes", "2", "--devices-per-process", "4", "--timeout", "110", timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "match the single-process results" in proc.stdout
    for name in ("logits", "blocks.1.hook_resid_post", "sweep"):
        assert f"ok   {name}: max |diff|" in proc.stdout, proc.stdout
    assert secs < 120


def test_lost_peer_fails_clearly_within_timeout():
    proc, secs = _launch(
        "--simulate-failure",
        "1:forward",
        "--heartbeat-timeout",
        "5",
        "--timeout",
        "90",
        "--grace",
        "40",
        timeout=100,
    )
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "process 1: exited with code 76" in proc.stdout, proc.stdout
    # process 0 ended on its own (not killed by the launcher) with a clear diagnosis
    assert "process 0: lost its peer" in proc.stdout, proc.stdout
    assert secs < 90


def test_watchdog_exits_a_stalled_process():
    code = (
        "import time; from mechjax.launch import watchdog\n"
        "with watchdog(1, 'collective'):\n    time.sleep(30)\n"
    )
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 75
    assert "no progress in stage 'collective' for 1 s" in proc.stderr
    assert time.perf_counter() - t < 20


if __name__ == "__main__":
    print(json.dumps(_child()))
