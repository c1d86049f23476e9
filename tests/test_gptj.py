"""GPT-J: HF parity (parallel block, interleaved partial rotary), sites, generation,
patching, AtP, LayerNorm folding with ln_1 stored twice, GGUF."""

import jax
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
from mechjax import nn
from mechjax.models import gptj
from mechjax.weights import fold_layer_norm

pytest.importorskip("transformers")

BASE = dict(
    vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=64, n_inner=96
)

# a parallel block: no hook_resid_mid; the MLP reads its own copy of ln_1 (ln2 sites)
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
    "blocks.0.hook_attn_out",
    "blocks.0.hook_mlp_in",
    "blocks.0.ln2.hook_scale",
    "blocks.0.ln2.hook_normalized",
    "blocks.0.mlp.hook_pre",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "ln_final.hook_scale",
    "ln_final.hook_normalized",
]


@pytest.fixture(scope="module")
def hf():
    return hf_model("GPTJConfig", "GPTJForCausalLM", **BASE)


@pytest.fixture(scope="module")
def model(hf):
    return port(*hf)


def test_golden_site_list_and_config(model):
    cfg = gptj.Config(d_model=8, n_layers=1, n_heads=2, d_head=4, d_mlp=8, d_vocab=10, rotary_dim=2)
    assert gptj.site_names(cfg) == GOLDEN_1_LAYER
    c = model.config
    assert (c.rotary_dim, c.d_mlp, c.act, c.parallel_residual) == (8, 96, "gelu_new", True)
    with pytest.raises(ValueError, match="rotary_dim"):
        gptj.Config(d_model=8, n_layers=1, n_heads=2, d_head=4, d_mlp=8, d_vocab=10, rotary_dim=3)


def test_interleaved_rotary_is_not_rotate_half():
    """GPT-J rotates pairs (0, 1), (2, 3), ...: the rotation of a vector whose only
    nonzero entry is dim 0 moves it into dim 1 (rotate-half would move it to dim 2)."""
    x = np.zeros((1, 1, 1, 6), np.float32)
    x[..., 0] = 1.0
    rope = jax.jit(gptj.apply_rope_interleaved)  # one program, not one per eager op
    out = rope(jnp.asarray(x), jnp.array([[1]]), nn.rope_inv_freq(4, 10000.0))
    assert np.nonzero(np.asarray(out[0, 0, 0]))[0].tolist() == [0, 1]
    np.testing.assert_allclose(out[0, 0, 0, :2], [np.cos(1.0), np.sin(1.0)], rtol=1e-6)


def test_matches_hf(model, hf):
    check_hf_parity(model, hf[1])


def test_every_site(model, hf):
    check_every_site(model, hf[1])


def test_generation_with_hooks(model):
    check_generation(model)


def test_patch_sweep(model):
    check_patch_sweep(model)


def test_atp(model):
    check_atp(model)


def test_fold_layer_norm(model, hf):
    folded = mj.Model(jax.jit(fold_layer_norm)(model.params), model.config, model.family)
    got = np.asarray(jrun(folded, jnp.asarray(TOKENS), capture=reference_sites(model)).logits)
    want = hf_outputs(hf[1]).logits.numpy()
    assert np.abs(got - want).max() <= 1e-4, max_diff(got, want)
    assert (
        "b_in" in folded.params["blocks"][0]["mlp"] and "b_Q" in folded.params["blocks"][0]["attn"]
    )


def test_gguf_loads_as_hf(model, hf, tmp_path):
    """The `gguf` package's gptj names (llama.cpp has no GPT-J converter): q/k in HF's
    row order (llama.cpp's default RoPE rotates GPT-J's adjacent pairs)."""
    hf_cfg, m = hf
    t = hf_tensors(m)
    names = {
        "attn_norm": "ln_1",
        "attn_q": "attn.q_proj",
        "attn_k": "attn.k_proj",
        "attn_v": "attn.v_proj",
        "attn_output": "attn.out_proj",
        "ffn_up": "mlp.fc_in",
        "ffn_down": "mlp.fc_out",
    }
    tensors = {
        "token_embd.weight": t["transformer.wte.weight"],
        "output_norm.weight": t["transformer.ln_f.weight"],
        "output_norm.bias": t["transformer.ln_f.bias"],
        "output.weight": t["lm_head.weight"],
        "output.bias": t["lm_head.bias"],
    }
    for l in range(2):
        for g, h in names.items():
            for kind in ("weight", "bias"):
                if f"transformer.h.{l}.{h}.{kind}" in t:
                    tensors[f"blk.{l}.{g}.{kind}"] = t[f"transformer.h.{l}.{h}.{kind}"]
    md = {
        "gptj.block_count": 2,
        "gptj.context_length": 64,
        "gptj.embedding_length": 64,
        "gptj.feed_forward_length": 96,
        "gptj.attention.head_count": 4,
        "gptj.rope.dimension_count": 8,
        "gptj.attention.layer_norm_epsilon": hf_cfg.layer_norm_epsilon,
    }
    check_gguf(write_gguf(tmp_path / "gptj.gguf", "gptj", md, tensors), model)
