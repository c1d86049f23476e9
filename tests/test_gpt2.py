"""GPT-2 family: parity with HF `GPT2LMHeadModel` on a tiny random config, sites, padding."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff

import mechjax as mj
from mechjax.io.families import family_for
from mechjax.models import gpt2

HF_CONFIG = dict(
    n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0
)

# TransformerLens's hook names for a 1-layer GPT-2, in forward order. Written by hand;
# the split q/k/v inputs sit where the ln1 sites would be (they replace them when asked).
GOLDEN_SITES_1_LAYER = [
    "hook_embed",
    "hook_pos_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_scale",
    "blocks.0.ln1.hook_normalized",
    "blocks.0.hook_q_input",
    "blocks.0.hook_k_input",
    "blocks.0.hook_v_input",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
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
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "ln_final.hook_scale",
    "ln_final.hook_normalized",
]


# One compile per (shapes, capture set): eager dispatch would compile every primitive.
run = jax.jit(mj.run, static_argnames=("capture",))
forward = jax.jit(gpt2.forward, static_argnames=("cfg",))


def _close(a, b, tol=1e-4):
    np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), atol=tol, rtol=0, err_msg=max_diff(a, b)
    )


@pytest.fixture(scope="module")
def hf():
    """(HF model with weights at std 0.2, its state dict as numpy) built without download."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(**HF_CONFIG, attn_implementation="eager")
    ).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = 0.2 * torch.randn(p.shape, generator=gen)
            p.copy_(
                1.0 + noise
                if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
                else noise
            )
    tensors = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return model, tensors


@pytest.fixture(scope="module")
def model(hf) -> mj.Model:
    family = family_for("gpt2")
    cfg = family.config_from_hf(hf[0].config.to_dict())
    return mj.Model(family.params_from_hf(hf[1], cfg), cfg, family)


@pytest.fixture(scope="module")
def toks() -> np.ndarray:
    return np.random.RandomState(1).randint(0, 100, (2, 11)).astype(np.int32)


@pytest.fixture(scope="module")
def hf_out(hf, toks):
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        return hf[0](
            torch.from_numpy(toks).long(), output_hidden_states=True, output_attentions=True
        )


@pytest.fixture(scope="module")
def ours(model, toks):
    """One run capturing the sites compared with HF's hidden states and attentions."""
    n = model.config.n_layers
    sites = [f"blocks.{l}.hook_resid_pre" for l in range(n)]
    sites += [f"blocks.{l}.attn.hook_pattern" for l in range(n)]
    return run(model, toks, capture=tuple(sites))


def test_config_from_hf(model):
    cfg = model.config
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_mlp) == (64, 2, 4, 16, 256)
    assert (cfg.d_vocab, cfg.n_ctx, cfg.act) == (100, 64, "gelu_new")


def test_logits_match_hf(ours, hf_out):
    _close(ours.logits, hf_out.logits.numpy())


def test_activations_match_hf(model, ours, hf_out):
    for l in range(model.config.n_layers):
        _close(ours.cache[f"blocks.{l}.hook_resid_pre"], hf_out.hidden_states[l].numpy())
        _close(ours.cache[f"blocks.{l}.attn.hook_pattern"], hf_out.attentions[l].numpy())


def test_prefixless_checkpoint_names(hf, model, ours, toks):
    """The hub's GPT-2 checkpoints name tensors `h.0...`, without `transformer.`."""
    bare = {k.removeprefix("transformer."): v for k, v in hf[1].items() if k != "lm_head.weight"}
    params = gpt2.params_from_hf(bare, model.config)
    other = run(dataclasses.replace(model, params=params), toks, capture=tuple(ours.cache))
    _close(other.logits, ours.logits, tol=0)


def test_split_inputs_result_and_mlp_in_change_nothing(model, ours, toks):
    """Expensive sites computed on request hold the right values and change no logit."""
    sites = (
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_q_input",
        "blocks.1.hook_v_input",
        "blocks.0.attn.hook_result",
        "blocks.0.hook_attn_out",
        "blocks.1.hook_mlp_in",
    )
    out = run(model, toks, capture=sites)
    _close(out.logits, ours.logits, tol=1e-5)
    q_in = out.cache["blocks.0.hook_q_input"]
    assert q_in.shape == (2, 11, 4, 64)
    _close(q_in, jnp.broadcast_to(out.cache["blocks.0.hook_resid_pre"][:, :, None], q_in.shape), 0)
    b_O = model.params["blocks"][0]["attn"]["b_O"]
    _close(
        out.cache["blocks.0.attn.hook_result"].sum(axis=2) + b_O,
        out.cache["blocks.0.hook_attn_out"],
        tol=1e-5,
    )


# -------------------------------------------------------------- without the reference

SMALL = gpt2.Config(d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64, d_vocab=50, n_ctx=8)


@pytest.fixture(scope="module")
def small() -> mj.Model:
    family = family_for("gpt2")
    return mj.Model(family.init(jax.random.PRNGKey(0), SMALL, scale=0.3), SMALL, family)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_equals_one_at_a_time(small, side):
    rng = np.random.RandomState(2)
    prompts = [rng.randint(1, 50, n).astype(np.int32) for n in (5, 2)]
    width = max(map(len, prompts))
    toks = np.zeros((len(prompts), width), np.int32)
    mask = np.zeros((len(prompts), width), bool)
    for i, p in enumerate(prompts):
        sl = slice(0, len(p)) if side == "right" else slice(width - len(p), width)
        toks[i, sl], mask[i, sl] = p, True
    batched = run(small, toks, attention_mask=jnp.asarray(mask)).logits
    for i, p in enumerate(prompts):
        _close(batched[i][mask[i]], run(small, p[None]).logits[0], tol=1e-5)


def test_site_names_golden():
    cfg = dataclasses.replace(SMALL, n_layers=1)
    assert gpt2.site_names(cfg) == GOLDEN_SITES_1_LAYER
    two = gpt2.site_names(SMALL)
    assert len(two) == 4 + 2 * 22 and two[24] == "blocks.1.hook_resid_pre"


def test_init_deterministic_and_shaped():
    a, b = gpt2.init(jax.random.PRNGKey(3), SMALL), gpt2.init(jax.random.PRNGKey(3), SMALL)
    c = gpt2.init(jax.random.PRNGKey(4), SMALL)
    assert jax.tree.all(jax.tree.map(lambda x, y: np.array_equal(x, y), a, b))
    assert not np.array_equal(a["blocks"][0]["attn"]["W_Q"], c["blocks"][0]["attn"]["W_Q"])
    assert jax.tree.map(lambda x: tuple(x.shape), a) == gpt2.param_shapes(SMALL)
    assert np.array_equal(a["unembed"]["W_U"], a["embed"]["W_E"].T)


def test_run_with_capture_through_family(small):
    toks = jnp.asarray([[1, 2, 3, 4, 5]], jnp.int32)
    capture = (
        "hook_pos_embed",
        "blocks.1.attn.hook_z",
        "blocks.0.mlp.hook_post",
        "ln_final.hook_scale",
    )
    out = run(small, toks, capture=capture)
    assert out.logits.shape == (1, 5, 50)
    assert out.cache["hook_pos_embed"].shape == (1, 5, 32)
    _close(out.cache["hook_pos_embed"][0], small.params["pos_embed"]["W_pos"][:5], tol=0)
    assert out.cache["blocks.1.attn.hook_z"].shape == (1, 5, 4, 8)
    assert out.cache["blocks.0.mlp.hook_post"].shape == (1, 5, 64)
    assert out.cache["ln_final.hook_scale"].shape == (1, 5, 1)
    with pytest.raises(mj.SiteError):
        mj.run(small, toks, capture=["blocks.0.mlp.hook_pre_linear"])


def test_position_past_n_ctx_is_nan(small):
    """A position without a learned embedding is loud (NaN), never a clamped row."""
    logits = forward(small.params, jnp.ones((1, SMALL.n_ctx + 2), jnp.int32), SMALL)
    assert np.isnan(np.asarray(logits[0, SMALL.n_ctx :])).all()
