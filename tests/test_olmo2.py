"""OLMo 2: HF parity (post-norms, QK-norm over all heads, GQA, biases), sites, split
inputs that stay per head, generation, patching, AtP, GGUF."""

import jax.numpy as jnp
import numpy as np
import pytest
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
    hf_tensors,
    jrun,
    port,
    reference_sites,
    write_gguf,
)

import mechjax as mj
from mechjax.models import olmo2

pytest.importorskip("transformers")

BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    attention_bias=True,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

# no norm before the sublayers; post-norms (ln1_post, ln2_post) on their outputs
GOLDEN_1_LAYER = [
    "hook_embed",
    "blocks.0.hook_resid_pre",
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
    "blocks.0.ln1_post.hook_scale",
    "blocks.0.ln1_post.hook_normalized",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_mid",
    "blocks.0.hook_mlp_in",
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
    return hf_model("Olmo2Config", "Olmo2ForCausalLM", **BASE)


@pytest.fixture(scope="module")
def model(hf):
    return port(*hf)


def test_golden_site_list():
    cfg = olmo2.Config(
        d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=8, d_vocab=10
    )
    assert olmo2.site_names(cfg) == GOLDEN_1_LAYER


def test_matches_hf(model, hf):
    check_hf_parity(model, hf[1])


def test_every_site(model, hf):
    check_every_site(model, hf[1])


def test_split_query_inputs_stay_per_head(model):
    """Patching head 1's query input changes head 1's query only, although the QK-norm
    statistic spans all heads: each head normalises its own copy's full projection."""
    q_in, q = "blocks.1.hook_q_input", "blocks.1.attn.hook_rot_q"
    toks = jnp.asarray(TOKENS)
    base = jrun(model, toks, capture=reference_sites(model)).cache[q]  # the unsplit run
    other = jnp.asarray(np.random.RandomState(3).randn(2, 11, 4, 64), jnp.float32)
    out = jrun(model, toks, {q_in: mj.patch(other, heads=[1])}, capture=(q,)).cache[q]
    changed = np.abs(np.asarray(out - base)).max(axis=(0, 1, 3)) > 1e-4
    assert changed.tolist() == [False, True, False, False]


def test_generation_with_hooks(model):
    check_generation(model)


def test_patch_sweep(model):
    check_patch_sweep(model)


def test_atp(model):
    check_atp(model)


def test_gguf_loads_as_hf(model, hf, tmp_path):
    """llama.cpp's olmo2 conversion: HF's tensors renamed, rows not permuted."""
    hf_cfg, m = hf
    t = hf_tensors(m)
    names = {
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
        "post_attention_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
        "post_ffw_norm": "post_feedforward_layernorm",
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
        "olmo2.block_count": 2,
        "olmo2.context_length": 64,
        "olmo2.embedding_length": 64,
        "olmo2.feed_forward_length": 96,
        "olmo2.attention.head_count": 4,
        "olmo2.attention.head_count_kv": 2,
        "olmo2.rope.freq_base": 10000.0,
        "olmo2.attention.layer_norm_rms_epsilon": hf_cfg.rms_norm_eps,
    }
    check_gguf(write_gguf(tmp_path / "olmo2.gguf", "olmo2", md, tensors), model)
