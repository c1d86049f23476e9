"""Phi-3: HF parity with partial rotary and LongRoPE (short and long factors), sites,
generation, patching, AtP, GGUF (fused attn_qkv / ffn_up, rope_factors tensors)."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff
from family_checks import (
    TOKENS,
    VOCAB,
    check_atp,
    check_every_site,
    check_generation,
    check_gguf,
    check_hf_parity,
    check_patch_sweep,
    hf_model,
    hf_outputs,
    hf_tensors,
    jrun,
    port,
    reference_sites,
    write_gguf,
)

import mechjax as mj
from mechjax.models import phi3

pytest.importorskip("transformers")

ORIG = 8  # original_max_position_embeddings: TOKENS (11) run on the long factors
_rs = np.random.RandomState(0)
BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    original_max_position_embeddings=ORIG,
    partial_rotary_factor=0.5,
    rope_scaling=dict(
        rope_type="longrope",
        short_factor=[float(x) for x in 1 + _rs.rand(4)],
        long_factor=[float(x) for x in 2 + 3 * _rs.rand(4)],
    ),
    sliding_window=6,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


@pytest.fixture(scope="module")
def hf():
    return hf_model("Phi3Config", "Phi3ForCausalLM", **BASE)


@pytest.fixture(scope="module")
def model(hf):
    return port(*hf)


def test_golden_site_list():
    """Llama's sites (the fused projections are split on load; tests/test_sites.py)."""
    from test_sites import GOLDEN_LLAMA_1_LAYER

    cfg = phi3.Config(d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=8, d_vocab=10)
    assert phi3.site_names(cfg) == GOLDEN_LLAMA_1_LAYER
    assert cfg.rotary_dim == 4  # the whole head by default
    with pytest.raises(ValueError, match="short_factor has 3 entries"):
        phi3.Config(d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=8, d_vocab=10, short_factor=(1.0,) * 3, long_factor=(1.0,) * 3)  # fmt: skip


def test_config(model):
    c = model.config
    assert (c.rotary_dim, c.original_ctx, c.sliding_window) == (8, ORIG, 6)
    assert c.rope_attention_factor == pytest.approx(np.sqrt(1 + np.log(64 / ORIG) / np.log(ORIG)))


def test_matches_hf_long_factors(model, hf):
    check_hf_parity(model, hf[1])  # 11 positions > ORIG: long factors


def test_matches_hf_short_factors(model, hf):
    toks = TOKENS[:, :ORIG]
    got = np.asarray(jrun(model, jnp.asarray(toks)).logits)
    want = hf_outputs(hf[1], toks).logits.numpy()
    assert np.abs(got - want).max() <= 1e-4, max_diff(got, want)
    # the short and long tables differ: the first ORIG positions' logits depend on the call
    long = jrun(model, jnp.asarray(TOKENS), capture=reference_sites(model)).logits
    long = np.asarray(long)[:, :ORIG]
    assert np.abs(long - got).max() > 1e-2


def test_every_site(model, hf):
    check_every_site(model, hf[1])


def test_generation_with_hooks(model):
    # 6 + 2 positions stay within ORIG; a generation crossing it keeps the short-factor
    # keys in the cache (HF's cache does the same), so it is not a recompute
    check_generation(model, n_new=2)


def test_patch_sweep(model):
    check_patch_sweep(model)


def test_atp(model):
    check_atp(model)


def test_unfuse_checks_rows(model, hf):
    t = hf_tensors(hf[1])
    t["model.layers.0.self_attn.qkv_proj.weight"] = t["model.layers.0.self_attn.qkv_proj.weight"][
        :-1
    ]
    with pytest.raises(mj.CheckpointError, match="qkv_proj.weight has 127 rows"):
        phi3.params_from_hf(t, model.config)


def test_gguf_loads_as_hf(model, hf, tmp_path):
    """llama.cpp's phi3 conversion keeps the fused attn_qkv and ffn_up (= [gate; up]),
    rotate-half RoPE (no row permutation), and writes LongRoPE's factors as tensors."""
    hf_cfg, m = hf
    t = hf_tensors(m)
    names = {
        "attn_norm": "input_layernorm",
        "attn_qkv": "self_attn.qkv_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_up": "mlp.gate_up_proj",
        "ffn_down": "mlp.down_proj",
    }
    tensors = {
        "token_embd.weight": t["model.embed_tokens.weight"],
        "output_norm.weight": t["model.norm.weight"],
        "output.weight": t["lm_head.weight"],
        "rope_factors_long.weight": np.asarray(BASE["rope_scaling"]["long_factor"]),
        "rope_factors_short.weight": np.asarray(BASE["rope_scaling"]["short_factor"]),
    }
    for l in range(2):
        for g, h in names.items():
            tensors[f"blk.{l}.{g}.weight"] = t[f"model.layers.{l}.{h}.weight"]
    md = {
        "phi3.block_count": 2,
        "phi3.context_length": 64,
        "phi3.rope.scaling.original_context_length": ORIG,
        "phi3.embedding_length": 64,
        "phi3.feed_forward_length": 48,
        "phi3.attention.head_count": 4,
        "phi3.attention.head_count_kv": 2,
        "phi3.attention.layer_norm_rms_epsilon": hf_cfg.rms_norm_eps,
        "phi3.rope.dimension_count": 8,
        "phi3.rope.freq_base": 10000.0,
        "phi3.rope.scaling.attn_factor": float(np.sqrt(1 + np.log(64 / ORIG) / np.log(ORIG))),
        "phi3.attention.sliding_window": 6,
    }
    check_gguf(write_gguf(tmp_path / "phi3.gguf", "phi3", md, tensors), model)
