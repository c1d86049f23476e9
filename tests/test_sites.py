"""Site names: the golden ordered list of the Llama family, parsing, act_name."""

import pytest

import mechjax as mj
from mechjax import sites
from mechjax.models import llama

# Written by hand from TransformerLens's HookedTransformer hook names (with the split
# q/k/v inputs, rotary q/k and per-head results enabled), in forward order.
GOLDEN_LLAMA_1_LAYER = [
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
    "blocks.0.mlp.hook_pre",
    "blocks.0.mlp.hook_pre_linear",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "ln_final.hook_scale",
    "ln_final.hook_normalized",
]


def test_llama_golden_site_list():
    cfg = llama.Config(
        d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=8, d_vocab=10
    )
    assert llama.site_names(cfg) == GOLDEN_LLAMA_1_LAYER


def test_every_listed_site_is_visited_in_forward_order(tiny_llama, tokens):
    from mechjax.hooks import HookContext

    # ask for everything except the split inputs (they replace the ln1 path)
    wanted = [s for s in tiny_llama.sites if not s.endswith("_input")]
    ctx = HookContext({}, wanted)
    tiny_llama.forward(tokens, hook=ctx)
    assert ctx.visited == wanted


def test_site_shapes(tiny_llama, tokens):
    c = mj.run_with_cache(tiny_llama, tokens).cache
    b, p = tokens.shape
    assert c["hook_embed"].shape == (b, p, 32)
    assert c["blocks.0.ln1.hook_scale"].shape == (b, p, 1)
    assert c["blocks.0.attn.hook_q"].shape == (b, p, 4, 8)
    assert c["blocks.0.attn.hook_k"].shape == (b, p, 2, 8)
    assert c["blocks.0.attn.hook_pattern"].shape == (b, 4, p, p)
    assert c["blocks.1.mlp.hook_post"].shape == (b, p, 48)
    assert "blocks.0.attn.hook_result" not in c  # expensive: only when asked


def test_parse_and_act_name():
    assert sites.parse("blocks.3.attn.hook_z") == (3, "attn", "hook_z")
    assert sites.parse("blocks.12.hook_resid_pre") == (12, None, "hook_resid_pre")
    assert sites.parse("ln_final.hook_scale") == (None, "ln_final", "hook_scale")
    assert mj.act_name("resid_pre", 3) == "blocks.3.hook_resid_pre"
    assert mj.act_name("z", 0) == "blocks.0.attn.hook_z"
    assert mj.act_name("scale", 2, "ln2") == "blocks.2.ln2.hook_scale"
    assert mj.act_name("normalized", norm="ln_final") == "ln_final.hook_normalized"
    with pytest.raises(mj.SiteError, match="valid kinds"):
        mj.act_name("resid_pree", 1)
    with pytest.raises(mj.SiteError, match="needs a layer"):
        mj.act_name("resid_pre")
