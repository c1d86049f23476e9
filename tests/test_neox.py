"""GPT-NeoX / Pythia parity with HF transformers (live, tiny random configs), sites, padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff

import mechjax as mj
from mechjax import kv_cache
from mechjax.hooks import HookContext
from mechjax.io.families import family_of_module
from mechjax.models import neox

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIGS = {
    "pythia_parallel": dict(use_parallel_residual=True, rotary_pct=0.25),
    "sequential_full_rotary": dict(
        use_parallel_residual=False, rotary_pct=1.0, rotary_emb_base=500.0
    ),
    "no_bias_half_rotary": dict(attention_bias=False, rotary_pct=0.5, hidden_act="gelu_new"),
}

FAMILY = family_of_module("neox")


def _hf_model(name):
    extra = dict(CONFIGS[name])
    base = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    rope = {
        "rope_type": "default",
        "rope_theta": extra.pop("rotary_emb_base", 10000.0),
        "partial_rotary_factor": extra.pop("rotary_pct"),
    }
    hf_cfg = transformers.GPTNeoXConfig(**base, **extra, rope_parameters=rope)
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    m = transformers.GPTNeoXForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for p in m.parameters():  # large enough weights that any wrong op shows
            p.copy_(
                torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.5) + (1.0 if p.dim() == 1 else 0.0)
            )
    return hf_cfg, m


def _port(hf_cfg, m):
    cfg = neox.config_from_hf(hf_cfg.to_dict())
    params = neox.params_from_hf({k: v.numpy() for k, v in m.state_dict().items()}, cfg)
    return mj.Model(params, cfg, FAMILY)


CAPTURE = (
    "blocks.0.hook_resid_pre",
    "blocks.1.hook_resid_pre",
    "blocks.0.attn.hook_pattern",
    "blocks.1.attn.hook_pattern",
)
TOKENS = np.random.RandomState(1).randint(0, 97, (2, 19))
# one compiled program per config serves parity, sites and padding
_run = jax.jit(lambda m, t, mask: mj.run(m, t, capture=CAPTURE, attention_mask=mask))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_match_hf(name):
    hf_cfg, m = _hf_model(name)
    model = _port(hf_cfg, m)
    with torch.no_grad():
        ref = m(torch.tensor(TOKENS)).logits.numpy()
    out = np.asarray(_run(model, jnp.asarray(TOKENS), jnp.ones(TOKENS.shape, bool)).logits)
    assert np.abs(out - ref).max() <= 1e-4, f"{name}: {max_diff(out, ref)}"


def test_residual_stream_and_patterns_match_hf():
    hf_cfg, m = _hf_model("pythia_parallel")
    model = _port(hf_cfg, m)
    with torch.no_grad():
        r = m(torch.tensor(TOKENS), output_hidden_states=True, output_attentions=True)
    c = _run(model, jnp.asarray(TOKENS), jnp.ones(TOKENS.shape, bool)).cache
    for l in range(2):
        ref = r.hidden_states[l].numpy()
        got = np.asarray(c[f"blocks.{l}.hook_resid_pre"])
        assert np.abs(got - ref).max() < 1e-4, max_diff(got, ref)
        refp = r.attentions[l].numpy()
        got = np.asarray(c[f"blocks.{l}.attn.hook_pattern"])
        assert np.abs(got - refp).max() < 1e-5, max_diff(got, refp)


def test_config_from_old_style_pythia_json():
    # Pythia's own config.json: rotary_pct / rotary_emb_base, no rope_parameters
    hf = {
        "model_type": "gpt_neox",
        "hidden_size": 512,
        "num_attention_heads": 8,
        "num_hidden_layers": 6,
        "intermediate_size": 2048,
        "vocab_size": 50304,
        "rotary_pct": 0.25,
        "rotary_emb_base": 10000,
        "use_parallel_residual": True,
        "hidden_act": "gelu",
        "max_position_embeddings": 2048,
        "layer_norm_eps": 1e-5,
    }
    cfg = neox.config_from_hf(hf)
    assert (cfg.d_head, cfg.rotary_dim, cfg.parallel_residual, cfg.bias) == (64, 16, True, True)
    with pytest.raises(mj.CheckpointError, match="not 'gpt_neox'"):
        neox.config_from_hf({"model_type": "llama"})
    with pytest.raises(ValueError, match="rotary_dim"):
        neox.Config(d_model=8, n_layers=1, n_heads=2, d_head=4, d_mlp=8, d_vocab=10, rotary_dim=3)
    with pytest.raises(mj.CheckpointError, match="no tensor"):
        neox.params_from_hf({}, cfg)


@pytest.mark.parametrize("parallel", [True, False])
def test_every_listed_site_is_visited_in_forward_order(parallel):
    cfg = neox.Config(
        d_model=16,
        n_layers=2,
        n_heads=2,
        d_head=8,
        d_mlp=24,
        d_vocab=20,
        rotary_dim=4,
        parallel_residual=parallel,
    )
    params = neox.init(jax.random.PRNGKey(0), cfg, scale=0.3)
    names = neox.site_names(cfg)
    assert ("blocks.0.hook_resid_mid" in names) is not parallel
    wanted = [s for s in names if not s.endswith("_input")]
    ctx = HookContext({}, wanted)
    jax.eval_shape(
        lambda p, t: neox.forward(p, t, cfg, hook=ctx),
        params,
        jax.ShapeDtypeStruct((1, 5), jnp.int32),
    )
    assert ctx.visited == wanted


def test_left_padded_batch_equals_one_at_a_time():
    hf_cfg, m = _hf_model("pythia_parallel")
    model = _port(hf_cfg, m)
    rng = np.random.RandomState(4)
    width = TOKENS.shape[1]
    prompts = [rng.randint(1, 97, n) for n in (5, width)]
    toks = np.zeros((2, width), np.int32)
    mask = np.zeros((2, width), bool)
    for i, p in enumerate(prompts):
        toks[i, width - len(p) :], mask[i, width - len(p) :] = p, True
    batched = np.asarray(_run(model, jnp.asarray(toks), jnp.asarray(mask)).logits)
    for i, p in enumerate(prompts):
        with torch.no_grad():
            ref = m(torch.tensor(p[None])).logits.numpy()[0]
        got = batched[i][mask[i]]
        assert np.abs(got - ref).max() < 1e-4, max_diff(got, ref)


def test_kv_cache_decode_matches_forward():
    """Prefill of a left-padded prompt then one token at a time equals the full forward."""
    cfg = neox.Config(
        d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=24, d_vocab=20, rotary_dim=4
    )
    params = neox.init(jax.random.PRNGKey(3), cfg, scale=0.3)
    toks = jnp.asarray(np.random.RandomState(5).randint(0, 20, (2, 8)))
    mask = jnp.asarray(np.arange(8)[None] >= np.array([[3], [0]]))

    @jax.jit
    def both(params):
        full = neox.forward(params, toks, cfg, attention_mask=mask)
        out = neox.decode(
            params, toks[:, :5], cfg, kv_cache.init(cfg, 2, 8), attention_mask=mask[:, :5]
        )
        logits, cache = [out.logits], out.cache
        for t in range(5, 8):
            out = neox.decode(params, toks[:, t : t + 1], cfg, cache)
            logits.append(out.logits)
            cache = out.cache
        return full, jnp.concatenate(logits, 1)

    full, inc = both(params)
    full, inc = np.asarray(full)[np.asarray(mask)], np.asarray(inc)[np.asarray(mask)]
    assert np.abs(full - inc).max() < 1e-5, max_diff(full, inc)
