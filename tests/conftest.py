"""Shared fixtures: tiny random models of each family, built without any download."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mechjax as mj
from mechjax.io.families import family_of_module
from mechjax.models.llama import Config as LlamaConfig
from mechjax.progress import release_compiled

jax.config.update("jax_enable_x64", False)


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """After each test file, drop JAX's compiled programs if they hold over half the
    process's memory-mapping limit: a worker that runs a few hundred files compiles
    thousands of programs, and at the limit XLA's compiler dies of a segmentation fault."""
    yield
    release_compiled()


def max_diff(a, b) -> str:
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return f"max |diff| = {d.max():.3g}, mean |diff| = {d.mean():.3g}"


@pytest.fixture(scope="session")
def tiny_llama() -> mj.Model:
    """2-layer GQA Llama with weights large enough that a wrong op shows up."""
    llama = family_of_module("llama")
    cfg = LlamaConfig(
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_head=8,
        d_mlp=48,
        d_vocab=50,
        n_ctx=64,
        rope_theta=10000.0,
    )
    params = llama.init(jax.random.PRNGKey(0), cfg, scale=0.3)
    return mj.Model(params, cfg, llama)


@pytest.fixture(scope="session")
def circuit_pair():
    """(clean, corrupted, logit-difference metric) [4, 5] for the circuit tests: one shape
    and metric across their files, so each compiled circuit program is reused."""
    from mechjax import metrics

    rng = np.random.RandomState(7)
    clean = jnp.asarray(rng.randint(0, 50, (4, 5)), jnp.int32)
    corrupted = jnp.asarray(rng.randint(0, 50, (4, 5)), jnp.int32)
    ans, wrong = rng.randint(0, 50, 4), rng.randint(0, 50, 4)
    return clean, corrupted, metrics.LogitDiff(jnp.asarray(ans), jnp.asarray(wrong))


@pytest.fixture(scope="session")
def mib_truth_model():
    """The MIB reproduction's ground-truth induction model at smoke size, trained once
    (settings, model, final loss) for its own tests and the reproduction's smoke run."""
    from mechjax.analyses.mib import groundtruth

    s = groundtruth.SETTINGS["smoke"]
    model, loss = groundtruth.train_model(s)
    return s, model, loss


@pytest.fixture(scope="session")
def tokens() -> jnp.ndarray:
    return jnp.asarray(np.random.RandomState(0).randint(0, 50, (3, 7)), jnp.int32)


_jit_run = jax.jit(mj.run, static_argnames=("capture",))


def jrun(model, tokens, hooks=None, capture=(), **kw):
    """`mj.run` under jit (eager JAX compiles op by op: slow on small CPUs)."""
    return _jit_run(model, tokens, hooks, capture=tuple(capture), **kw)


@pytest.fixture(scope="session")
def tiny_smollm2() -> mj.Model:
    """A 2-layer random Llama carrying SmolLM2-135M's tokenizer (digits one per token):
    real prompts through every stage of a reproduction in seconds."""
    import dataclasses

    real = mj.load("smollm2-135m")
    cfg = dataclasses.replace(
        real.config, n_layers=2, d_model=32, n_heads=2, n_kv_heads=1, d_head=16, d_mlp=64
    )
    params = real.family.init(jax.random.PRNGKey(0), cfg)
    return mj.Model(params, cfg, real.family, real.tokenizer)


def stop_resumed_run(monkeypatch, out, drop, module, name: str) -> None:
    """Set up a resumed run that stops early: remove one kept result from
    out/details.json (`drop`, its key path) so the run has a stage to do, and make
    `module.name` raise when that stage starts."""
    import json

    path = out / "details.json"
    details = json.loads(path.read_text())
    node = details
    for key in drop[:-1]:
        node = node[key]
    node.pop(drop[-1])
    path.write_text(json.dumps(details))

    def stopped(*a, **k):
        raise RuntimeError("stopped")

    monkeypatch.setattr(module, name, stopped)
