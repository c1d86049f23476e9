"""SAE files: SAELens directories both ways, Gemma Scope params.npz, and bad files.

A file written by `save` and read by `load` gives the same arrays bit for bit; files in
SAELens's own layouts (written here with safetensors from the documented field names,
both the SAELens 6 `metadata` layout and the older top-level one) load with the right
architecture; corrupted, partial and unknown files fail naming the file and the field.
Whether SAELens itself reads our files and computes the same latents is checked by
`scripts/bench_sae.py --check-format` in the bench environment (SAELens needs
TransformerLens and torch; it is not in the test environment).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mechjax as mj
from mechjax import sae as S
from mechjax.errors import CheckpointError, InputError


def _sae(arch, **kw):
    s = S.init_sae(jax.random.PRNGKey(3), 8, 24, arch, k=3, **kw)
    rng = np.random.RandomState(0)
    f = lambda *shape: jnp.asarray(rng.normal(size=shape).astype(np.float32))
    s = s.replace(b_enc=f(24), b_dec=f(s.d_out))
    if s.threshold is not None:
        s = s.replace(threshold=jnp.abs(f(24)))
    if arch == "gated":
        s = s.replace(r_mag=f(24), b_mag=f(24))
    return s


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (p, x), (_, y) in zip(la, lb):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(p))


@pytest.mark.parametrize("arch", S.ARCHITECTURES)
def test_save_load_round_trip_bit_for_bit(tmp_path, arch):
    meta = S.SAEMeta(
        model_name="smollm2-135m", hook_name="blocks.3.hook_resid_post", context_size=64
    )
    sae = _sae(arch, meta=meta)
    S.save(sae, tmp_path / arch)
    back = S.load(tmp_path / arch)
    _leaves_equal(sae, back)
    assert (back.arch, back.k, back.apply_b_dec_to_input, back.meta) == (
        sae.arch, sae.k, sae.apply_b_dec_to_input, sae.meta,
    )  # fmt: skip
    cfg = json.loads((tmp_path / arch / "cfg.json").read_text())
    want = {"relu": "standard", "batchtopk": "jumprelu"}.get(arch, arch)
    assert cfg["architecture"] == want and cfg["d_in"] == 8 and cfg["d_sae"] == 24


def test_transcoder_round_trip(tmp_path):
    meta = S.SAEMeta(
        hook_name="blocks.0.ln2.hook_normalized", hook_name_out="blocks.0.hook_mlp_out"
    )
    sae = S.init_sae(jax.random.PRNGKey(0), 8, 16, "relu", d_out=8, skip=True, meta=meta)
    sae = sae.replace(W_skip=jnp.ones((8, 8)))
    S.save(sae, tmp_path / "tc")
    assert (
        json.loads((tmp_path / "tc" / "cfg.json").read_text())["architecture"] == "skip_transcoder"
    )
    back = S.load(tmp_path / "tc")
    _leaves_equal(sae, back)
    assert back.is_transcoder and back.meta.hook_name_out == "blocks.0.hook_mlp_out"


def _write_saelens(d, cfg, tensors):
    from safetensors.numpy import save_file

    d.mkdir(parents=True)
    (d / "cfg.json").write_text(json.dumps(cfg))
    save_file(
        {k: np.asarray(v, np.float32) for k, v in tensors.items()},
        str(d / "sae_weights.safetensors"),
    )


def test_loads_saelens_layouts(tmp_path):
    rng = np.random.RandomState(1)
    t = {"W_enc": rng.normal(size=(8, 24)), "W_dec": rng.normal(size=(24, 8)),
         "b_enc": rng.normal(size=24), "b_dec": rng.normal(size=8)}  # fmt: skip
    # SAELens 5: TopK as "standard" with activation_fn_str, hook at the top level
    old = {"architecture": "standard", "d_in": 8, "d_sae": 24, "activation_fn_str": "topk",
           "activation_fn_kwargs": {"k": 4}, "hook_name": "blocks.2.hook_resid_pre",
           "apply_b_dec_to_input": True, "normalize_activations": "none"}  # fmt: skip
    _write_saelens(tmp_path / "old", old, t)
    sae = S.load(tmp_path / "old")
    assert (sae.arch, sae.k, sae.meta.hook_name) == ("topk", 4, "blocks.2.hook_resid_pre")
    # SAELens 6 TopK trained with rescale_acts_by_decoder_norm: folded, same latents
    new = {"architecture": "topk", "d_in": 8, "d_sae": 24, "k": 4, "apply_b_dec_to_input": False,
           "rescale_acts_by_decoder_norm": True, "metadata": {"hook_name": "blocks.1.hook_resid_post"}}  # fmt: skip
    _write_saelens(tmp_path / "new", new, t)
    sae = S.load(tmp_path / "new")
    x = rng.normal(size=(5, 8))
    norms = np.linalg.norm(t["W_dec"], axis=-1)
    pre = (x @ t["W_enc"] + t["b_enc"]) * norms
    idx = np.argsort(-pre, -1)[:, :4]
    want = np.zeros_like(pre)
    np.put_along_axis(want, idx, np.maximum(np.take_along_axis(pre, idx, -1), 0), -1)
    np.testing.assert_allclose(sae.encode(jnp.asarray(x, jnp.float32)), want, rtol=1e-4, atol=1e-4)
    # gated: SAELens names the gate bias b_gate
    g = {
        **{k: v for k, v in t.items() if k != "b_enc"},
        "b_gate": t["b_enc"],
        "b_mag": t["b_enc"],
        "r_mag": t["b_enc"],
    }
    _write_saelens(tmp_path / "gated", {"architecture": "gated", "d_in": 8, "d_sae": 24}, g)
    assert S.load(tmp_path / "gated").arch == "gated"


def test_loads_gemma_scope_params(tmp_path):
    rng = np.random.RandomState(2)
    t = {"W_enc": rng.normal(size=(8, 24)), "W_dec": rng.normal(size=(24, 8)), "b_enc": rng.normal(size=24),
         "b_dec": rng.normal(size=8), "threshold": np.abs(rng.normal(size=24))}  # fmt: skip
    np.savez(tmp_path / "params.npz", **{k: v.astype(np.float32) for k, v in t.items()})
    for path in (tmp_path / "params.npz", tmp_path):
        sae = S.load(path)
        assert sae.arch == "jumprelu" and not sae.apply_b_dec_to_input
    x = rng.normal(size=(4, 8))
    pre = x @ t["W_enc"] + t["b_enc"]  # Gemma Scope: no b_dec subtracted
    want = np.where(pre > t["threshold"], pre, 0) * (pre > 0)
    np.testing.assert_allclose(sae.encode(jnp.asarray(x, jnp.float32)), want, rtol=1e-4, atol=1e-4)


def test_bad_files_name_the_file_and_field(tmp_path):
    good = tmp_path / "good"
    S.save(_sae("topk"), good)
    weights = (good / "sae_weights.safetensors").read_bytes()
    # truncated weights
    bad = tmp_path / "truncated"
    S.save(_sae("topk"), bad)
    (bad / "sae_weights.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(
        CheckpointError,
        match=r"truncated.*sae_weights.safetensors|sae_weights.safetensors.*truncated",
    ):
        S.load(bad)
    # partial: the weights file is gone
    (bad / "sae_weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match="sae_weights.safetensors: missing"):
        S.load(bad)
    # corrupted config
    (good / "cfg.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cfg.json: not valid JSON"):
        S.load(good)
    # unknown architecture
    cfg = {"architecture": "matryoshka_batchtopk", "d_in": 8, "d_sae": 24}
    (good / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"cfg.json: field 'architecture' is 'matryoshka_batchtopk'"
    ):
        S.load(good)
    # a width that disagrees with the tensors
    (good / "cfg.json").write_text(
        json.dumps({"architecture": "topk", "k": 3, "d_in": 9, "d_sae": 24})
    )
    with pytest.raises(
        CheckpointError, match=r"tensor 'W_enc' has shape \(8, 24\), expected \(9, 24\)"
    ):
        S.load(good)
    (good / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": 8, "d_sae": 24}))
    with pytest.raises(CheckpointError, match="field 'k' must be a positive int"):
        S.load(good)
    with pytest.raises(CheckpointError, match="no such SAE"):
        S.load(tmp_path / "nowhere")


def test_width_mismatch_with_the_site(tiny_llama):
    sae = S.init_sae(
        jax.random.PRNGKey(0),
        16,
        32,
        "topk",
        k=2,
        meta=S.SAEMeta(hook_name="blocks.0.hook_resid_post"),
    )
    with pytest.raises(
        InputError, match=r"width mismatch: site 'blocks.0.hook_resid_post'.*width 32.*d_in is 16"
    ):
        S.check_site(tiny_llama, sae)
    with pytest.raises(InputError, match="not a site of this model"):
        S.check_site(tiny_llama, sae, "blocks.7.hook_resid_post")
    ok = S.init_sae(
        jax.random.PRNGKey(0),
        32,
        32,
        "topk",
        k=2,
        meta=S.SAEMeta(hook_name=mj.act_name("resid_post", 1)),
    )
    assert S.check_site(tiny_llama, ok) == ("blocks.1.hook_resid_post", "")
