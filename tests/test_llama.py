"""Llama family parity with HF transformers (live, tiny random configs), padding, masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import jrun, max_diff

import mechjax as mj
from mechjax.io.families import family_for
from mechjax.models import llama

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIGS = {
    "llama_mha": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=4)),
    "llama_gqa_llama3_rope": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            num_key_value_heads=2,
            rope_theta=500000.0,
            tie_word_embeddings=False,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8,
            },
        ),
    ),
    "qwen2_bias_gqa": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(num_key_value_heads=1, tie_word_embeddings=True),
    ),
    "mistral_window": (
        "MistralConfig",
        "MistralForCausalLM",
        dict(num_key_value_heads=2, sliding_window=4),
    ),
}


def _hf_model(name):
    cfg_cls, model_cls, extra = CONFIGS[name]
    base = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
    )
    hf_cfg = getattr(transformers, cfg_cls)(**{**base, **extra})
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    m = getattr(transformers, model_cls)(hf_cfg).eval()
    with torch.no_grad():
        for p in m.parameters():  # large enough weights that any wrong op shows
            p.copy_(
                torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.5) + (1.0 if p.dim() == 1 else 0.0)
            )
    return hf_cfg, m


def _port(hf_cfg, m):
    fam = family_for(hf_cfg.model_type)
    cfg = fam.config_from_hf(hf_cfg.to_dict())
    params = fam.params_from_hf({k: v.numpy() for k, v in m.state_dict().items()}, cfg)
    return mj.Model(params, cfg, fam)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_match_hf(name):
    hf_cfg, m = _hf_model(name)
    model = _port(hf_cfg, m)
    toks = np.random.RandomState(1).randint(0, 97, (2, 19))
    with torch.no_grad():
        ref = m(torch.tensor(toks)).logits.numpy()
    out = np.asarray(jax.jit(mj.run)(model, jnp.asarray(toks)).logits)
    assert np.abs(out - ref).max() <= 1e-4, f"{name}: {max_diff(out, ref)}"


def test_residual_stream_and_patterns_match_hf():
    hf_cfg, m = _hf_model("llama_gqa_llama3_rope")
    model = _port(hf_cfg, m)
    toks = np.random.RandomState(2).randint(0, 97, (1, 12))
    with torch.no_grad():
        r = m(torch.tensor(toks), output_hidden_states=True, output_attentions=True)
    cap = [
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_pre",
        "blocks.0.attn.hook_pattern",
        "blocks.1.attn.hook_pattern",
    ]
    c = mj.run(model, jnp.asarray(toks), capture=cap).cache
    for l in range(2):
        ref = r.hidden_states[l].numpy()
        got = np.asarray(c[f"blocks.{l}.hook_resid_pre"])
        # relative to the stream's scale (|resid| reaches ~15 here, where one float32 ulp is
        # ~1e-6): 2e-6 is a few ulp, far below what any wrong op would give
        assert np.abs(got - ref).max() <= 2e-6 * np.abs(ref).max(), max_diff(got, ref)
        refp = r.attentions[l].numpy()
        got = np.asarray(c[f"blocks.{l}.attn.hook_pattern"])
        assert np.abs(got - refp).max() < 1e-5, max_diff(got, refp)


def test_sliding_window_is_in_effect():
    hf_cfg, m = _hf_model("mistral_window")
    model = _port(hf_cfg, m)
    no_window = mj.Model(
        model.params,
        llama.Config(**{**model.config.__dict__, "sliding_window": None}),
        model.family,
    )
    toks = jnp.asarray(np.random.RandomState(3).randint(0, 97, (1, 12)))
    a, b = mj.run(model, toks).logits, mj.run(no_window, toks).logits
    assert np.abs(np.asarray(a[0, :4] - b[0, :4])).max() < 1e-5  # inside the window
    assert np.abs(np.asarray(a[0, 6:] - b[0, 6:])).max() > 1e-2  # beyond it


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_one_at_a_time(tiny_llama, side):
    rng = np.random.RandomState(4)
    prompts = [rng.randint(1, 50, n) for n in (5, 9, 7)]
    width = 9
    toks = np.zeros((3, width), np.int32)
    mask = np.zeros((3, width), bool)
    for i, p in enumerate(prompts):
        sl = slice(width - len(p), width) if side == "left" else slice(0, len(p))
        toks[i, sl], mask[i, sl] = p, True
    batched = np.asarray(
        jrun(tiny_llama, jnp.asarray(toks), attention_mask=jnp.asarray(mask)).logits
    )
    for i, p in enumerate(prompts):
        alone = np.asarray(jrun(tiny_llama, jnp.asarray(p[None])).logits[0])
        got = batched[i][mask[i]]
        assert np.abs(got - alone).max() < 1e-5, max_diff(got, alone)


def test_bad_config_errors():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        llama.Config(d_model=8, n_layers=1, n_heads=3, n_kv_heads=2, d_head=4, d_mlp=8, d_vocab=10)
    with pytest.raises(mj.CheckpointError, match="not a Llama-family"):
        llama.config_from_hf({"model_type": "bert"})
    cfg = llama.Config(
        d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, d_head=4, d_mlp=8, d_vocab=10
    )
    with pytest.raises(mj.CheckpointError, match="no tensor"):
        llama.params_from_hf({}, cfg)
