"""Gemma 2: HF parity (soft-capped attention and logits, local and global layers with
prompts longer than the window), sites, generation, patching across layer types, AtP,
the QK fix's refusal, GGUF (1 + w norm gains, softcap metadata)."""

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
from mechjax import attribution, metrics
from mechjax.models import gemma2

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
    sliding_window=4,
    query_pre_attn_scalar=16,
    attn_logit_softcapping=5.0,
    final_logit_softcapping=3.0,
)

# TransformerLens's Gemma 2 sites: ln1, ln1_post, ln2, ln2_post around the sublayers
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
    "blocks.0.attn.hook_rot_q",
    "blocks.0.attn.hook_rot_k",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.attn.hook_result",
    "blocks.0.ln1_post.hook_scale",
    "blocks.0.ln1_post.hook_normalized",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_mid",
    "blocks.0.hook_mlp_in",
    "blocks.0.ln2.hook_scale",
    "blocks.0.ln2.hook_normalized",
    "blocks.0.mlp.hook_pre",
    "blocks.0.mlp.hook_pre_linear",
    "blocks.0.mlp.hook_post",
    "blocks.0.ln2_post.hook_scale",
    "blocks.0.ln2_post.hook_normalized",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "ln_final.hook_scale",
    "ln_final.hook_normalized",
]


@pytest.fixture(scope="module")
def hf():
    return hf_model("Gemma2Config", "Gemma2ForCausalLM", gain_offset=True, **BASE)


@pytest.fixture(scope="module")
def model(hf):
    return port(*hf)


def test_golden_site_list_and_config(model):
    cfg = gemma2.Config(
        d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=8, d_vocab=10
    )
    assert gemma2.site_names(cfg) == GOLDEN_1_LAYER
    c = model.config
    assert c.layer_types == (True, False)  # HF's default: even layers local
    assert (c.attn_softcap, c.final_softcap, c.query_pre_attn_scalar) == (5.0, 3.0, 16.0)


def test_matches_hf(model, hf):
    check_hf_parity(model, hf[1])


def test_every_site(model, hf):
    check_every_site(model, hf[1])


def test_generation_with_hooks(model):
    check_generation(model)


def test_patch_sweep_across_layer_types(model):
    check_patch_sweep(model)


def test_atp(model):
    check_atp(model)


def test_qk_fix_refuses_soft_capped_attention(model):
    toks = np.zeros((1, 4), np.int32)
    with pytest.raises(mj.InputError, match="gemma2.*soft-capping"):
        attribution.atp_qk_fix(model, toks, toks, metrics.LogitDiff(np.array([1]), np.array([2])))


def test_gguf_loads_as_hf(model, hf, tmp_path):
    """llama.cpp's gemma2 conversion: norm gains stored as 1 + w, rows not permuted,
    softcaps and the window in the metadata, no lm_head (tied)."""
    hf_cfg, m = hf
    t = hf_tensors(m)
    names = {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
        "post_ffw_norm": "post_feedforward_layernorm",
    }

    def stored(name):
        return t[name] + np.float32(1) if name.endswith("norm.weight") else t[name]

    tensors = {
        "token_embd.weight": t["model.embed_tokens.weight"],
        "output_norm.weight": stored("model.norm.weight"),
    }
    for l in range(2):
        for g, h in names.items():
            tensors[f"blk.{l}.{g}.weight"] = stored(f"model.layers.{l}.{h}.weight")
    md = {
        "gemma2.block_count": 2,
        "gemma2.context_length": 64,
        "gemma2.embedding_length": 64,
        "gemma2.feed_forward_length": 96,
        "gemma2.attention.head_count": 4,
        "gemma2.attention.head_count_kv": 2,
        "gemma2.attention.key_length": 16,
        "gemma2.attention.value_length": 16,
        "gemma2.attention.layer_norm_rms_epsilon": hf_cfg.rms_norm_eps,
        "gemma2.attn_logit_softcapping": 5.0,
        "gemma2.final_logit_softcapping": 3.0,
        "gemma2.attention.sliding_window": 4,
    }
    path = write_gguf(tmp_path / "gemma2.gguf", "gemma2", md, tensors)
    # w + 1 - 1 in float32 is within an ulp of w, not always bit-equal
    check_gguf(path, model, atol=1e-6)
