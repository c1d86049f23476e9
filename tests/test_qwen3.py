"""Qwen3 (QK-norm on the Llama block): HF parity, sites, generation, patching, AtP, GGUF."""

import numpy as np
import pytest
from family_checks import (
    VOCAB,
    check_atp,
    check_every_site,
    check_generation,
    check_gguf,
    check_hf_parity,
    check_patch_sweep,
    hf_model,
    hf_tensors,
    port,
    write_gguf,
)

import mechjax as mj
from mechjax.models import qwen3

pytest.importorskip("transformers")

BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=64,
    rope_theta=5000.0,
    attention_bias=True,  # q/k/v/o biases (off in the released models)
)

# Llama's sites (tests/test_sites.py) with TransformerLens's q_norm/k_norm sites between
# the projections and RoPE.
GOLDEN_1_LAYER = [
    "hook_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_scale",
    "blocks.0.ln1.hook_normalized",
    "blocks.0.hook_q_input",
    "blocks.0.hook_k_input",
    "blocks.0.hook_v_input",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.attn.q_norm.hook_scale",
    "blocks.0.attn.q_norm.hook_normalized",
    "blocks.0.attn.k_norm.hook_scale",
    "blocks.0.attn.k_norm.hook_normalized",
    "blocks.0.attn.hook_rot_q",
    "blocks.0.attn.hook_rot_k",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.attn.hook_result",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_mid",
    "blocks.0.hook_mlp_in",
    "blocks.0.ln2.hook_scale",
    "blocks.0.ln2.hook_normalized",
    "blocks.0.mlp.hook_pre",
    "blocks.0.mlp.hook_pre_linear",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "ln_final.hook_scale",
    "ln_final.hook_normalized",
]


@pytest.fixture(scope="module")
def hf():
    return hf_model("Qwen3Config", "Qwen3ForCausalLM", **BASE)


@pytest.fixture(scope="module")
def model(hf):
    return port(*hf)


def test_golden_site_list():
    cfg = qwen3.Config(
        d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=8, d_vocab=10
    )
    assert qwen3.site_names(cfg) == GOLDEN_1_LAYER


def test_matches_hf(model, hf):
    assert model.config.qkv_bias and model.config.o_bias
    check_hf_parity(model, hf[1])


def test_every_site(model, hf):
    check_every_site(model, hf[1])
    out = mj.run(model, np.zeros((1, 3), np.int32), capture=["blocks.0.attn.q_norm.hook_scale"])
    assert out.cache["blocks.0.attn.q_norm.hook_scale"].shape == (1, 3, 4, 1)  # per head


def test_generation_with_hooks(model):
    check_generation(model)


def test_patch_sweep(model):
    check_patch_sweep(model)


def test_atp(model):
    check_atp(model)


def test_gguf_loads_as_hf(model, hf, tmp_path):
    """llama.cpp's qwen3 conversion: Llama's names plus attn_q_norm/attn_k_norm, rows
    not permuted (llama.cpp rotates Qwen3 in the rotate-half layout)."""
    hf_cfg, m = hf
    t = hf_tensors(m)
    names = {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    tensors = {
        "token_embd.weight": t["model.embed_tokens.weight"],
        "output_norm.weight": t["model.norm.weight"],
        "output.weight": t["lm_head.weight"],
    }
    for l in range(2):
        for g, h in names.items():
            for kind in ("weight", "bias"):
                if f"model.layers.{l}.{h}.{kind}" in t:
                    tensors[f"blk.{l}.{g}.{kind}"] = t[f"model.layers.{l}.{h}.{kind}"]
    md = {
        "qwen3.block_count": 2,
        "qwen3.context_length": 64,
        "qwen3.embedding_length": 64,
        "qwen3.feed_forward_length": 96,
        "qwen3.attention.head_count": 4,
        "qwen3.attention.head_count_kv": 2,
        "qwen3.attention.key_length": 16,
        "qwen3.attention.value_length": 16,
        "qwen3.rope.freq_base": 5000.0,
        "qwen3.attention.layer_norm_rms_epsilon": hf_cfg.rms_norm_eps,
    }
    check_gguf(write_gguf(tmp_path / "qwen3.gguf", "qwen3", md, tensors), model)


def test_qwen2_gguf_loads_as_hf(tmp_path):
    """Qwen2 / Qwen2.5 (the Llama family with q/k/v biases): llama.cpp's `qwen2` files
    keep HF's rows (no permutation) and the biases."""
    base = {k: v for k, v in BASE.items() if k not in ("head_dim", "attention_bias")}
    hf_cfg, m = hf_model("Qwen2Config", "Qwen2ForCausalLM", **base, tie_word_embeddings=True)
    model = port(hf_cfg, m)
    assert model.family.name == "llama" and model.config.qkv_bias
    t = hf_tensors(m)
    names = {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    tensors = {
        "token_embd.weight": t["model.embed_tokens.weight"],
        "output_norm.weight": t["model.norm.weight"],
    }
    for l in range(2):
        for g, h in names.items():
            for kind in ("weight", "bias"):
                if f"model.layers.{l}.{h}.{kind}" in t:
                    tensors[f"blk.{l}.{g}.{kind}"] = t[f"model.layers.{l}.{h}.{kind}"]
    md = {
        "qwen2.block_count": 2,
        "qwen2.context_length": 64,
        "qwen2.embedding_length": 64,
        "qwen2.feed_forward_length": 96,
        "qwen2.attention.head_count": 4,
        "qwen2.attention.head_count_kv": 2,
        "qwen2.rope.freq_base": 5000.0,
        "qwen2.attention.layer_norm_rms_epsilon": hf_cfg.rms_norm_eps,
    }
    check_gguf(write_gguf(tmp_path / "qwen2.gguf", "qwen2", md, tensors), model)
