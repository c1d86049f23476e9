"""Gemma 3: parity with HF `Gemma3ForCausalLM` (live, tiny random configs), padding, the
KV cache, and (slow) the real Gemma 3 270M GGUF against HF's reading of the same file.

Stored real-weight reference: scripts/make_gemma3_reference.py.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff

import mechjax as mj
from mechjax import kv_cache
from mechjax.io.families import family_of_module
from mechjax.models import gemma3

REF = Path(__file__).parent / "fixtures" / "gemma3" / "reference.npz"
FAM = family_of_module("gemma3")


def _hf_model(**extra):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    base = {
        "vocab_size": 97,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 64,
        "sliding_window": 4,
        "query_pre_attn_scalar": 16,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
    }
    hf_cfg = transformers.Gemma3TextConfig(**{**base, **extra})
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    m = transformers.Gemma3ForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for p in m.parameters():  # large enough weights that any wrong op shows
            p.copy_(torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.5))
    return hf_cfg, m


def _port(hf_cfg, m):
    cfg = gemma3.config_from_hf(hf_cfg.to_dict())
    params = gemma3.params_from_hf({k: v.numpy() for k, v in m.state_dict().items()}, cfg)
    return mj.Model(params, cfg, FAM)


_jit_run = jax.jit(mj.run, static_argnames=("capture",))


def test_config_from_hf_reads_layer_types_and_rope():
    hf_cfg, m = _hf_model()
    cfg = _port(hf_cfg, m).config
    assert cfg.layer_types == (True, False, True)
    assert (cfg.rope_theta, cfg.rope_local_theta, cfg.sliding_window) == (1e6, 1e4, 4)
    assert gemma3.default_layer_types(18).count(False) == 3  # layers 5, 11, 17 global


@pytest.mark.parametrize("extra", [{}, {"final_logit_softcapping": 3.0}], ids=["gemma3", "softcap"])
def test_logits_and_sites_match_hf(extra):
    import torch

    hf_cfg, m = _hf_model(**extra)
    model = _port(hf_cfg, m)
    toks = np.random.RandomState(1).randint(0, 97, (2, 11))
    with torch.no_grad():
        r = m(torch.tensor(toks), output_hidden_states=True, output_attentions=True)
    cap = (
        "blocks.1.hook_resid_pre",
        "blocks.2.hook_resid_pre",
        "blocks.0.attn.hook_pattern",
        "blocks.1.attn.hook_pattern",
    )
    out = _jit_run(model, jnp.asarray(toks), capture=cap)
    ref = r.logits.numpy()
    assert np.abs(np.asarray(out.logits) - ref).max() <= 1e-4, max_diff(out.logits, ref)
    for l in (1, 2):
        got, want = np.asarray(out.cache[f"blocks.{l}.hook_resid_pre"]), r.hidden_states[l].numpy()
        assert np.abs(got - want).max() <= 1e-4, max_diff(got, want)
    for l in (0, 1):
        got, want = np.asarray(out.cache[f"blocks.{l}.attn.hook_pattern"]), r.attentions[l].numpy()
        assert np.abs(got - want).max() <= 1e-5, max_diff(got, want)
    # layer 0 is local: nothing more than sliding_window - 1 positions back
    p0 = np.asarray(out.cache["blocks.0.attn.hook_pattern"])
    assert np.abs(np.triu(p0[0, 0].T, k=4)).max() == 0


def test_every_site_fires_in_order():
    hf_cfg, m = _hf_model()
    model = _port(hf_cfg, m)
    sites = [s for s in model.sites if not s.endswith("_input")]
    out = mj.run(model, jnp.zeros((1, 3), jnp.int32), capture=sites)
    assert set(out.cache) == set(sites)
    assert out.cache["blocks.0.attn.q_norm.hook_normalized"].shape == (1, 3, 4, 16)
    assert out.cache["blocks.0.ln1_post.hook_scale"].shape == (1, 3, 1)
    # split q/k/v inputs give the unsplit logits
    split = mj.run(model, jnp.zeros((1, 3), jnp.int32), capture=("blocks.0.hook_q_input",))
    np.testing.assert_allclose(split.logits, out.logits, atol=1e-5)


def test_left_padding_gives_the_unpadded_logits():
    hf_cfg, m = _hf_model()
    model = _port(hf_cfg, m)
    toks = np.random.RandomState(4).randint(1, 97, (1, 9))
    alone = np.asarray(_jit_run(model, jnp.asarray(toks)).logits)[0]
    padded = np.concatenate([np.zeros((1, 3), int), toks], 1)
    mask = np.concatenate([np.zeros((1, 3), bool), np.ones((1, 9), bool)], 1)
    got = np.asarray(_jit_run(model, jnp.asarray(padded), attention_mask=jnp.asarray(mask)).logits)
    assert np.abs(got[0, 3:] - alone).max() <= 1e-4


def test_decode_equals_forward_and_generate_equals_recompute():
    hf_cfg, m = _hf_model()
    model = _port(hf_cfg, m)
    cfg = model.config
    toks = jnp.asarray(np.random.RandomState(5).randint(0, 97, (2, 10)))

    @jax.jit
    def both(params):
        out = gemma3.decode(params, toks[:, :6], cfg, kv_cache.init(cfg, 2, 10))
        logits, cache = [out.logits], out.cache
        for t in range(6, 10):
            out = gemma3.decode(params, toks[:, t : t + 1], cfg, cache)
            logits.append(out.logits)
            cache = out.cache
        return jnp.concatenate(logits, 1), gemma3.forward(params, toks, cfg)

    dec, full = both(model.params)
    assert np.abs(np.asarray(dec) - np.asarray(full)).max() <= 1e-4, max_diff(dec, full)

    gen = mj.generate(model, toks[:1, :5], 6, stop_tokens=())
    buf = np.zeros((1, 11), np.int32)
    buf[0, :5] = np.asarray(toks[0, :5])
    fwd = jax.jit(lambda t: gemma3.forward(model.params, t, cfg))
    for t in range(5, 11):
        buf[0, t] = int(jnp.argmax(fwd(jnp.asarray(buf))[0, t - 1]))
    assert np.asarray(gen.tokens)[0].tolist() == buf[0, 5:].tolist()


# ---------------------------------------------------------------- real weights (slow)


@pytest.fixture(scope="module")
def gemma():
    from mechjax.io.loading import read_checkpoint

    ckpt = read_checkpoint("gemma3-270m")
    cfg = gemma3.config_from_hf(ckpt.config)
    return mj.Model(gemma3.params_from_hf(ckpt.tensors, cfg), cfg, FAM, ckpt.tokenizer)


@pytest.mark.slow
def test_gemma3_270m_config(gemma):
    c = gemma.config
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp, c.d_vocab) == (
        18,
        640,
        4,
        1,
        256,
        2048,
        262144,
    )
    assert (c.rope_theta, c.rope_local_theta, c.sliding_window) == (1e6, 1e4, 512)
    assert c.layer_types == gemma3.default_layer_types(18)


@pytest.mark.slow
def test_gemma3_270m_matches_hf_reference(gemma):
    data = np.load(REF)
    meta = json.loads(REF.with_suffix(".json").read_text())

    # gathered inside the jit: the 721-token prompt's full logits would be 0.75 GB
    @jax.jit
    def fwd(m, t, ids):
        lg = mj.run(m, t).logits[0]
        return jnp.take_along_axis(lg, ids, -1), lg[-1]

    for i, prompt in enumerate(meta["prompts"]):
        toks = data[f"tokens_{i}"]
        assert gemma.tokenizer.encode(prompt) == toks.tolist(), prompt
        top, last = map(
            np.asarray, fwd(gemma, jnp.asarray(toks[None]), jnp.asarray(data[f"top_ids_{i}"]))
        )
        assert np.abs(top - data[f"top_logits_{i}"]).max() <= 1e-3, max_diff(
            top, data[f"top_logits_{i}"]
        )
        last = last[data[f"last_ids_{i}"]]
        assert np.abs(last - data[f"last_logits_{i}"]).max() <= 1e-3, max_diff(
            last, data[f"last_logits_{i}"]
        )
    # all prompts in one left-padded batch: one compiled prefill and loop
    n = len(meta["prompts"])
    gen = mj.generate(
        gemma, [data[f"tokens_{i}"].tolist() for i in range(n)], meta["new_tokens"], stop_tokens=()
    )
    for i in range(n):
        assert np.asarray(gen.tokens)[i].tolist() == data[f"greedy_{i}"].tolist(), meta["prompts"][
            i
        ]


@pytest.mark.parametrize("strategy", ["wave", "scan"])
def test_patch_sweep_runs_each_layer_as_its_type(strategy):
    """Sweeps run blocks one at a time; a global layer run as "layer 0" (sliding window,
    local RoPE) would be wrong. Every cell equals a single patched forward of the full
    model, on prompts longer than the window, for both sweep strategies."""
    from mechjax import patching
    from mechjax.metrics import LogitDiff

    model = _port(*_hf_model())
    rs = np.random.RandomState(6)
    clean = rs.randint(0, 97, (2, 9)).astype(np.int32)
    corrupted = rs.randint(0, 97, (2, 9)).astype(np.int32)
    metric = LogitDiff(np.asarray([3, 4]), np.asarray([5, 6]))
    for site in ("resid_pre", "attn_out"):
        res = patching.patch_sweep(model, clean, corrupted, metric, site, strategy=strategy)
        grid = np.asarray(res.grid)
        for layer in range(3):
            name = mj.act_name(site, layer)
            src = np.asarray(_jit_run(model, jnp.asarray(clean), capture=(name,)).cache[name])
            for pos in (0, 4, 8):
                patched = np.array(
                    _jit_run(model, jnp.asarray(corrupted), capture=(name,)).cache[name]
                )
                patched[:, pos] = src[:, pos]
                want = float(
                    metric(
                        mj.run(
                            model, jnp.asarray(corrupted), hooks={name: mj.patch(patched)}
                        ).logits
                    )
                )
                assert abs(grid[layer, pos] - want) <= 1e-4 * max(1.0, abs(want)), (
                    site,
                    layer,
                    pos,
                    grid[layer, pos],
                    want,
                )
    with pytest.raises(mj.InputError, match="layers differ"):
        patching.run_from_layer(model, 1, jnp.zeros((2, 9, 64)), jnp.asarray(clean))
