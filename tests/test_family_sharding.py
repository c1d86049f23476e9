"""Sharding rules of the families added after Llama: every new parameter gets its logical
axes (router, stacked experts, QK-norm gains, post-norms), and a forward sharded over
`data` x `model` gives the single-device logits.

Virtual CPU devices exist only if XLA is told before JAX starts, so, as in
tests/test_sharding.py, the devices run in one subprocess (this file as a script) that
prints its measurements as JSON. Tolerance: |sharded - single| <= 1e-5 * (1 + |single|).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
FAMILIES = ("qwen3", "mixtral", "phi3", "gemma2", "olmo2", "gptj")
# even sizes everywhere the default rules shard (heads, kv heads, MLP, vocabulary)
SHAPES = dict(d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=48, d_vocab=64)


def _config(name: str):
    import importlib

    mod = importlib.import_module(f"mechjax.models.{name}")
    kw = dict(SHAPES)
    if name != "gptj":
        kw["n_kv_heads"] = 2
    if name == "mixtral":
        kw.update(n_experts=4, top_k=2)
    if name == "phi3":
        kw.update(rotary_dim=4)
    if name == "gptj":
        kw.update(rotary_dim=4)
    if name == "gemma2":
        kw.update(sliding_window=3, query_pre_attn_scalar=8.0, attn_softcap=5.0)
    return mod.Config(**kw)


def _child() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import mechjax as mj
    from mechjax import sharding as S
    from mechjax.io.families import family_of_module

    assert jax.device_count() == 4, jax.devices()
    mesh = S.make_mesh(data=2, model=2)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, 64, (2, 7)), jnp.int32)
    forward = jax.jit(lambda m, t: mj.run(m, t).logits)
    res = {}
    for name in FAMILIES:
        fam = family_of_module(name)
        cfg = _config(name)
        model = mj.Model(fam.init(jax.random.PRNGKey(0), cfg, scale=0.3), cfg, fam)
        ref = np.asarray(forward(model, tokens), np.float64)
        sm = S.shard_model(model, mesh)
        got = np.asarray(forward(sm, S.shard_batch(tokens, mesh)), np.float64)
        leaves = jax.tree_util.tree_flatten_with_path(sm.params)[0]
        res[name] = {
            "max": float(np.abs(got - ref).max()),
            "ok": bool(np.all(np.abs(got - ref) <= 1e-5 * (1 + np.abs(ref)))),
            "specs": {
                jax.tree_util.keystr(p): list(x.sharding.spec)
                + [None] * (x.ndim - len(x.sharding.spec))
                for p, x in leaves
            },
        }
    return res


@pytest.fixture(scope="module")
def child() -> dict:
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {FAST_COMPILE}",
        JAX_PLATFORMS="cpu",
    )
    proc = subprocess.run(
        [sys.executable, __file__], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", FAMILIES)
def test_sharded_forward_equals_single_device(child, name):
    assert child[name]["ok"], f"{name}: max |sharded - single| = {child[name]['max']:.3g}"


def test_new_parameters_have_logical_axes(child):
    spec = {name: child[name]["specs"] for name in FAMILIES}
    blk = "['blocks'][0]"
    # mixture of experts: each expert tensor-parallel over its MLP width, router replicated
    assert spec["mixtral"][f"{blk}['mlp']['experts']['W_gate']"] == [None, None, "model"]
    assert spec["mixtral"][f"{blk}['mlp']['experts']['W_out']"] == [None, "model", None]
    assert spec["mixtral"][f"{blk}['mlp']['W_router']"] == [None, None]
    # heads and vocabulary on `model` in every family; norm gains replicated
    for name in FAMILIES:
        assert spec[name][f"{blk}['attn']['W_Q']"] == ["model", None, None], name
        assert spec[name]["['unembed']['W_U']"] == [None, "model"], name
    assert spec["qwen3"][f"{blk}['attn']['q_norm']['w']"] == [None]
    assert spec["olmo2"][f"{blk}['ln1_post']['w']"] == [None]
    assert spec["gemma2"][f"{blk}['ln2_post']['w']"] == [None]
    assert spec["gptj"]["['unembed']['b_U']"] == ["model"]


if __name__ == "__main__":
    print(json.dumps(_child()))
