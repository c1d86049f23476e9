"""Mixtral-style mixture of experts: HF parity (logits, router logits), router and expert
sites, generation, patching, AtP, weight folding, both checkpoint layouts, GGUF."""

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
from mechjax.io.gguf import permute_qk
from mechjax.models import mixtral
from mechjax.weights import fold_layer_norm

pytest.importorskip("transformers")

E, K = 4, 2
BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    num_local_experts=E,
    num_experts_per_tok=K,
    sliding_window=5,
)

# Llama's attention sites; the dense MLP's sites replaced by the router and experts'
MLP_0 = [
    "blocks.0.mlp.hook_router_logits",
    "blocks.0.mlp.hook_expert_weights",
    "blocks.0.mlp.experts.0.hook_pre",
    "blocks.0.mlp.experts.1.hook_pre",
    "blocks.0.mlp.experts.0.hook_pre_linear",
    "blocks.0.mlp.experts.1.hook_pre_linear",
    "blocks.0.mlp.experts.0.hook_post",
    "blocks.0.mlp.experts.1.hook_post",
    "blocks.0.mlp.hook_expert_out",
]
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
    "blocks.0.hook_resid_mid",
    "blocks.0.hook_mlp_in",
    "blocks.0.ln2.hook_scale",
    "blocks.0.ln2.hook_normalized",
    *MLP_0,
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "ln_final.hook_scale",
    "ln_final.hook_normalized",
]


@pytest.fixture(scope="module")
def hf():
    return hf_model("MixtralConfig", "MixtralForCausalLM", **BASE)


@pytest.fixture(scope="module")
def model(hf):
    return port(*hf)


def test_golden_site_list():
    cfg = mixtral.Config(
        d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=8, d_vocab=10, n_experts=2
    )
    assert mixtral.site_names(cfg) == GOLDEN_1_LAYER
    with pytest.raises(ValueError, match="top_k"):
        mixtral.Config(d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=8, d_vocab=10, n_experts=2, top_k=3)  # fmt: skip


def test_matches_hf_router_and_expert_sites(model, hf):
    out = check_hf_parity(model, hf[1])
    import torch

    with torch.no_grad():
        ref = hf[1](torch.tensor(TOKENS), output_router_logits=True).router_logits
    for l in range(2):
        got = np.asarray(out[f"blocks.{l}.mlp.hook_router_logits"]).reshape(-1, E)
        want = ref[l].numpy()
        assert np.abs(got - want).max() <= 1e-5, max_diff(got, want)
    per_expert = np.asarray(out["blocks.1.mlp.hook_expert_out"])  # [batch, pos, E, d_model]
    assert per_expert.shape == TOKENS.shape + (E, 64)
    np.testing.assert_allclose(per_expert.sum(2), out["blocks.1.hook_mlp_out"], atol=1e-5)
    used = np.abs(per_expert).max(-1) > 0  # the experts each token routed to
    assert (used.sum(-1) == K).all()
    probs = np.asarray(out["blocks.1.mlp.hook_expert_weights"])  # softmax over experts
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(used, probs >= np.sort(probs, -1)[..., -K : -K + 1])


def test_every_site(model, hf):
    check_every_site(model, hf[1])


def test_ablating_an_expert_changes_only_its_tokens(model):
    """Zeroing expert 0's output at layer 1 changes the logits only at positions routed to it."""
    name = "blocks.1.mlp.experts.0.hook_post"
    base = jrun(model, jnp.asarray(TOKENS), capture=reference_sites(model))
    out = jrun(model, jnp.asarray(TOKENS), {name: mj.scale(0.0)})
    routed = np.abs(np.asarray(base.cache["blocks.1.mlp.hook_expert_out"])[:, :, 0]).max(-1) > 0
    changed = np.abs(np.asarray(out.logits - base.logits)).max(-1) > 1e-4  # not rounding
    assert routed.any() and not routed.all()
    np.testing.assert_array_equal(changed, routed)
    # the expert axis of hook_expert_out is the site's unit axis: heads=[0] picks expert 0
    per_expert = jrun(
        model, jnp.asarray(TOKENS), {"blocks.1.mlp.hook_expert_out": mj.ablate("zero", heads=[0])}
    )
    np.testing.assert_allclose(per_expert.logits, out.logits, atol=1e-5)
    with pytest.raises(mj.InterventionError, match=f"index {E} is out of range"):
        mj.run(model, TOKENS, {"blocks.1.mlp.hook_expert_out": mj.scale(0.0, heads=[E])})


def test_generation_with_hooks(model):
    check_generation(model)


def test_patch_sweep(model):
    check_patch_sweep(model)


def test_atp(model):
    check_atp(model)


def test_fold_layer_norm_folds_into_router_and_experts(model, hf):
    folded = mj.Model(jax.jit(fold_layer_norm)(model.params), model.config, model.family)
    got = np.asarray(jrun(folded, jnp.asarray(TOKENS), capture=reference_sites(model)).logits)
    want = hf_outputs(hf[1]).logits.numpy()
    assert np.abs(got - want).max() <= 1e-4, max_diff(got, want)


def test_checkpoint_layout_per_expert(model, hf):
    """The checkpoints' `block_sparse_moe.experts.{e}.w1/w3/w2` load as transformers'
    fused `experts.gate_up_proj` does."""
    t, m = hf_tensors(hf[1]), BASE["intermediate_size"]
    old = {}
    for k, v in t.items():
        if ".mlp.experts." not in k and ".mlp.gate." not in k:
            old[k] = v
    for l in range(2):
        pre, new = f"model.layers.{l}.block_sparse_moe", f"model.layers.{l}.mlp"
        old[f"{pre}.gate.weight"] = t[f"{new}.gate.weight"]
        for e in range(E):
            gate_up = t[f"{new}.experts.gate_up_proj"][e]
            old[f"{pre}.experts.{e}.w1.weight"] = gate_up[:m]
            old[f"{pre}.experts.{e}.w3.weight"] = gate_up[m:]
            old[f"{pre}.experts.{e}.w2.weight"] = t[f"{new}.experts.down_proj"][e]
    params = mixtral.params_from_hf(old, model.config)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(model.params)):
        np.testing.assert_array_equal(a, b)


def test_gguf_loads_as_hf(model, hf, tmp_path):
    """llama.cpp writes Mixtral as a `llama` with experts: Q/K rows permuted, the router
    as ffn_gate_inp, each layer's experts stacked as ffn_{gate,up,down}_exps."""
    hf_cfg, m = hf
    t, d_mlp = hf_tensors(m), BASE["intermediate_size"]
    tensors = {
        "token_embd.weight": t["model.embed_tokens.weight"],
        "output_norm.weight": t["model.norm.weight"],
        "output.weight": t["lm_head.weight"],
    }
    for l in range(2):
        pre, blk = f"model.layers.{l}", f"blk.{l}"
        gate_up = t[f"{pre}.mlp.experts.gate_up_proj"]
        tensors.update(
            {
                f"{blk}.attn_norm.weight": t[f"{pre}.input_layernorm.weight"],
                f"{blk}.attn_q.weight": permute_qk(t[f"{pre}.self_attn.q_proj.weight"], 4),
                f"{blk}.attn_k.weight": permute_qk(t[f"{pre}.self_attn.k_proj.weight"], 2),
                f"{blk}.attn_v.weight": t[f"{pre}.self_attn.v_proj.weight"],
                f"{blk}.attn_output.weight": t[f"{pre}.self_attn.o_proj.weight"],
                f"{blk}.ffn_norm.weight": t[f"{pre}.post_attention_layernorm.weight"],
                f"{blk}.ffn_gate_inp.weight": t[f"{pre}.mlp.gate.weight"],
                f"{blk}.ffn_gate_exps.weight": gate_up[:, :d_mlp],
                f"{blk}.ffn_up_exps.weight": gate_up[:, d_mlp:],
                f"{blk}.ffn_down_exps.weight": t[f"{pre}.mlp.experts.down_proj"],
            }
        )
    md = {
        "llama.block_count": 2,
        "llama.context_length": 64,
        "llama.embedding_length": 64,
        "llama.feed_forward_length": d_mlp,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.freq_base": float(hf_cfg.rope_parameters["rope_theta"]),
        "llama.attention.layer_norm_rms_epsilon": hf_cfg.rms_norm_eps,
        "llama.expert_count": E,
        "llama.expert_used_count": K,
    }
    path = write_gguf(tmp_path / "mixtral.gguf", "llama", md, tensors)
    # llama.cpp keeps no sliding window for Mixtral; compare with the windowless config
    import dataclasses

    windowless = mj.Model(
        model.params, dataclasses.replace(model.config, sliding_window=None), model.family
    )
    check_gguf(path, windowless)
