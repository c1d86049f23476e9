"""Learned edge masks: the gates' plumbing against the clean and corrupted runs, and a
vmapped training over sparsity targets that reaches each target's density."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import jrun

import mechjax as mj
from mechjax import circuits
from mechjax.circuits import masks as M


@pytest.fixture(scope="module")
def pair(circuit_pair):
    return circuit_pair[:2]


def test_gates_open_and_closed(tiny_llama, pair):
    clean, corrupted = pair
    model = circuits.ungroup_gqa(tiny_llama)
    g = circuits.graph_of(model)
    abl = jax.jit(M.ablated_outputs, static_argnums=(3, 4))(
        model, clean, corrupted, None, "corrupted"
    )
    cfg = M.MaskConfig()
    masked = jax.jit(
        lambda gate: M._masked_logits(model, clean, abl, gate, jnp.asarray(g.valid), None)
    )
    for la, ref in ((50.0, clean), (-50.0, corrupted)):
        gate = M._gates(jnp.full(g.valid.shape, la), jnp.zeros(2, jnp.uint32), cfg)
        np.testing.assert_allclose(masked(gate), jrun(model, ref).logits, atol=1e-4)


def test_targets_train_together(tiny_llama, pair):
    clean, corrupted = pair
    targets = (0.05, 0.3, 1.0)
    cfg = M.MaskConfig(steps=60, lr=0.2, batch_size=4)
    res = M.train_masks(tiny_llama, clean, corrupted, targets, config=cfg)
    assert res.log_alpha.shape == (3, 11, 27) and res.losses.shape == (60, 3)
    np.testing.assert_allclose(res.density, targets, atol=0.08)
    assert res.losses[-10:, 0].mean() < res.losses[:5, 0].mean()  # the sparse one learned
    # the masks rank edges for MIB's curve: one circuit per target from its own mask
    g = circuits.graph_of(tiny_llama)
    keep = np.asarray(M.keep_probability(res.log_alpha))
    circ = circuits.circuits_at(keep, g, targets, absolute=False)
    assert circ.shape == (3,) + g.valid.shape and circ[2].sum() == g.n_edges


def test_a_second_training_compiles_nothing(tiny_llama, pair):
    """Training again (new targets' values, another seed) reuses the compiled step: the
    optimiser was once a static argument rebuilt per call, so every call compiled again."""
    clean, corrupted = pair
    M.train_masks(tiny_llama, clean, corrupted, (0.1, 0.5), config=M.MaskConfig(steps=2))
    compiles = []

    def listen(event, secs, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        M.train_masks(
            tiny_llama, clean, corrupted, (0.2, 0.7), config=M.MaskConfig(steps=2, seed=1)
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == []


@pytest.mark.parametrize("pos", [None, np.array([3, -1, 0, 2])])
def test_masked_logits_at_the_read_position_equal_the_full_logits(tiny_llama, pair, pos):
    """Training unembeds only the position the KL reads; it equals the full forward's
    logits there, for random gates (the last position by default, or one per row)."""
    clean, corrupted = pair
    model = circuits.ungroup_gqa(tiny_llama)
    g = circuits.graph_of(model)
    valid = jnp.asarray(g.valid)
    abl = M.ablated_outputs(model, clean, corrupted, None, "corrupted")
    gate = jax.random.uniform(jax.random.PRNGKey(3), g.valid.shape)
    rows = clean[: len(pos)] if pos is not None else clean
    ab = abl if abl.shape[0] == 1 else abl[: rows.shape[0]]
    full = M._masked_logits(model, rows, ab, gate, valid, None)
    want = full[:, -1] if pos is None else full[np.arange(len(pos)), pos]
    got = M._masked_logits_at(model, rows, ab, gate, valid, None, pos)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_targets_in_chunks_train_as_side_by_side(tiny_llama, pair, monkeypatch):
    """Targets trained a chunk at a time (what bounds the memory on the real models: ten
    Gemma 3 targets side by side took 20 GB) give the masks of all side by side."""
    clean, corrupted = pair
    targets = (0.05, 0.2, 0.5)
    cfg = M.MaskConfig(steps=3)
    together = M.train_masks(tiny_llama, clean, corrupted, targets,
                             config=cfg._replace(target_batch=3))  # fmt: skip
    # a chunk of 2, then the remainder of 1
    apart = M.train_masks(tiny_llama, clean, corrupted, targets,
                          config=cfg._replace(target_batch=2))  # fmt: skip
    # Adam's normalised step turns float noise in near-zero gradients into moves of up
    # to a few 1e-3; a target's mask in another's place would differ by about 1
    np.testing.assert_allclose(apart.log_alpha, together.log_alpha, atol=1e-2)
    np.testing.assert_allclose(apart.losses, together.losses, rtol=1e-3)
    # by default the chunk follows the memory budget
    assert M.target_batch(tiny_llama, clean.shape, 3) == 3
    monkeypatch.setattr(M, "TARGET_BYTES", 1)
    assert M.target_batch(tiny_llama, clean.shape, 3) == 1
    with pytest.raises(mj.errors.InputError, match="target_batch"):
        M.train_masks(tiny_llama, clean, corrupted, targets, config=cfg._replace(target_batch=0))
