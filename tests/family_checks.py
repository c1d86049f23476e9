"""The checks every architecture family passes, shared by `tests/test_<family>.py`.

They are the checklist of `docs/adding_a_model.md`, each against an oracle the family's
code does not provide: HF transformers' logits, hidden states and attention weights; a
greedy loop that recomputes the whole sequence; single patched runs; finite differences;
llama.cpp's tensor names and conversions, written out by hand in each test file.

A family test file builds one small HF model (module scope) and calls these.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from conftest import max_diff

import mechjax as mj
from mechjax import attribution, metrics, patching
from mechjax.hooks import HookContext
from mechjax.io.families import family_for

VOCAB = 97
TOKENS = np.random.RandomState(1).randint(0, VOCAB, (2, 11)).astype(np.int32)
PROMPTS = [[3, 14, 15, 9, 26, 5], [35, 8, 9]]  # ragged: left-padded inside generate
N_NEW = 6
METRIC = metrics.LogitDiff(jnp.array([3, 4]), jnp.array([5, 6]))

jrun = jax.jit(mj.run, static_argnames=("capture",))


def hf_model(config_cls: str, model_cls: str, *, seed: int = 0, gain_offset: bool = False, **cfg):
    """(HF config, HF model) of random weights large enough that any wrong op shows:
    matrices ~ N(0, 0.2), vectors ~ N(1, 0.5) (norm gains near 1; `gain_offset` for
    Gemma's 1 + w gains: vectors ~ N(0, 0.5))."""
    import torch
    import transformers

    hf_cfg = getattr(transformers, config_cls)(**cfg)
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    m = getattr(transformers, model_cls)(hf_cfg).eval()
    one = 0.0 if gain_offset else 1.0
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(
                torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.5) + (one if p.dim() == 1 else 0)
            )
    return hf_cfg, m


def port(hf_cfg, m) -> mj.Model:
    """The HF model converted by its family's `config_from_hf` / `params_from_hf`."""
    fam = family_for(hf_cfg.model_type)
    cfg = fam.config_from_hf(hf_cfg.to_dict())
    params = fam.params_from_hf({k: v.numpy() for k, v in m.state_dict().items()}, cfg)
    return mj.Model(params, cfg, fam)


def hf_outputs(m, tokens=TOKENS):
    import torch

    with torch.no_grad():
        return m(torch.tensor(tokens), output_hidden_states=True, output_attentions=True)


def _resid(model) -> list[str]:
    return [f"blocks.{l}.hook_resid_pre" for l in range(model.config.n_layers)]


# sites a family adds that its own tests read from the shared reference run
_EXTRA = ("hook_router_logits", "hook_expert_weights", "hook_expert_out")


def reference_sites(model) -> tuple[str, ...]:
    """One capture set for the parity, patching and AtP checks and the families' own
    tests (one compiled run): resid_pre and pattern of every layer, the last layer's
    rotated queries and MLP output, the router and expert sites of a mixture of experts."""
    n = model.config.n_layers
    last = [f"blocks.{n - 1}.attn.hook_rot_q", f"blocks.{n - 1}.hook_mlp_out"]
    extra = [s for s in model.sites if s.rsplit(".", 1)[-1] in _EXTRA]
    pattern = [f"blocks.{l}.attn.hook_pattern" for l in range(n)]
    return tuple(_resid(model) + pattern + last + extra)


def check_hf_parity(model: mj.Model, m, tokens=TOKENS) -> mj.Cache:
    """Logits within 1e-4 of HF's (float32); the residual stream entering every layer and
    every layer's attention pattern equal to HF's hidden states and attention weights.
    Returns the run's captures (`reference_sites`)."""
    n = model.config.n_layers
    resid, pattern = _resid(model), [f"blocks.{l}.attn.hook_pattern" for l in range(n)]
    out = jrun(model, jnp.asarray(tokens), capture=reference_sites(model))
    r = hf_outputs(m, tokens)
    logits, ref = np.asarray(out.logits), r.logits.float().numpy()
    assert np.abs(logits - ref).max() <= 1e-4, f"logits: {max_diff(logits, ref)}"
    for l in range(n):
        got, want = np.asarray(out.cache[resid[l]]), r.hidden_states[l].numpy()
        assert np.abs(got - want).max() <= 1e-5 * (1 + np.abs(want).max()), (l, max_diff(got, want))
        got, want = np.asarray(out.cache[pattern[l]]), r.attentions[l].numpy()
        assert np.abs(got - want).max() <= 1e-5, (l, max_diff(got, want))
    print(f"{model.family.name}: max |logit diff| vs HF = {np.abs(logits - ref).max():.2g}")
    return out.cache


def check_every_site(model: mj.Model, m, tokens=TOKENS) -> None:
    """Every listed site fires, in the listed order, and `mj.run` takes an intervention
    and a capture at every site (traced: shapes and dtypes, no compile); the split q/k/v
    inputs of EAP give HF's logits (compiled)."""
    tokens = jnp.asarray(tokens)
    sites = [s for s in model.sites if not s.endswith("_input")]
    ctx = HookContext({}, sites)
    jax.eval_shape(
        lambda p, t: model.family.forward(p, t, model.config, hook=ctx), model.params, tokens
    )
    assert ctx.visited == sites
    hooks = {s: mj.add(jnp.zeros((), jnp.float32)) for s in sites}
    out = jax.eval_shape(lambda: mj.run(model, tokens, hooks, capture=sites, jit=False))
    assert sorted(out.cache) == sorted(sites)
    assert out.logits.shape == tokens.shape + (model.config.d_vocab,)
    assert all(x.dtype == jnp.float32 for x in out.cache.values())
    d, (b, p) = model.config.d_model, tokens.shape
    assert out.cache["hook_embed"].shape == (b, p, d)
    assert out.cache["blocks.0.attn.hook_pattern"].shape == (b, model.config.n_heads, p, p)
    assert out.cache["blocks.0.attn.hook_result"].shape == (b, p, model.config.n_heads, d)
    split = tuple(s for s in model.sites if s.endswith("_input"))
    if split:
        ref = hf_outputs(m, tokens).logits.float().numpy()
        got = np.asarray(jrun(model, tokens, capture=split).logits)
        assert np.abs(got - ref).max() <= 1e-4, max_diff(got, ref)


def check_generation(
    model: mj.Model, site: str = "blocks.1.hook_resid_pre", n_new: int = N_NEW
) -> None:
    """Greedy generation through the KV cache, steered at `site` at every step, equals
    recomputing the whole (left-padded) sequence with the same hook at every step."""
    v = jnp.asarray(np.random.RandomState(7).randn(model.config.d_model), jnp.float32)
    hooks = {site: mj.add(v)}
    gen = mj.generate(model, PROMPTS, n_new, hooks=hooks, stop_tokens=(), progress=False)
    width = max(map(len, PROMPTS))
    buf = np.zeros((len(PROMPTS), width + n_new), np.int32)
    mask = np.zeros(buf.shape, bool)
    for i, p in enumerate(PROMPTS):
        buf[i, width - len(p) : width], mask[i, width - len(p) : width] = p, True
    for t in range(n_new):
        logits = jrun(model, jnp.asarray(buf), hooks, attention_mask=jnp.asarray(mask)).logits
        buf[:, width + t] = np.asarray(jnp.argmax(logits[:, width + t - 1], -1))
        mask[:, width + t] = True
    assert np.asarray(gen.tokens).tolist() == buf[:, width:].tolist()


def _pair(seed: int = 6):
    """Clean and corrupted prompts of TOKENS' shape, equal on their first two positions."""
    rs = np.random.RandomState(seed)
    clean = rs.randint(0, VOCAB, TOKENS.shape).astype(np.int32)
    corrupted = clean.copy()
    corrupted[:, 2:] = rs.randint(0, VOCAB, (TOKENS.shape[0], TOKENS.shape[1] - 2))
    return jnp.asarray(clean), jnp.asarray(corrupted)


def check_patch_sweep(model: mj.Model) -> None:
    """Every cell of a resid_pre patching sweep (denoising: clean values into the
    corrupted run) equals one patched run of the whole model."""
    clean, corrupted = _pair()
    positions = (0, 5, TOKENS.shape[1] - 1)
    res = patching.patch_sweep(
        model, clean, corrupted, METRIC, "resid_pre", positions=positions, progress=False
    )
    grid = np.asarray(res.grid)
    resid, sites = _resid(model), reference_sites(model)
    src = jrun(model, clean, capture=sites).cache
    own = jrun(model, corrupted, capture=sites).cache
    change = [src[s] - own[s] for s in resid]  # patching = adding this at one position
    for layer in range(model.config.n_layers):
        for i, pos in enumerate(positions):
            at = (jnp.arange(TOKENS.shape[1]) == pos)[None, :, None]
            deltas = {s: c * at * (l == layer) for l, (s, c) in enumerate(zip(resid, change))}
            want = float(_metric_with(model, corrupted, METRIC, deltas))
            assert abs(grid[layer, i] - want) <= 1e-4 * max(1.0, abs(want)), (layer, pos)


@jax.jit
def _metric_with(model, tokens, metric, deltas):
    return metric(mj.run(model, tokens, {s: mj.add(d) for s, d in deltas.items()}).logits)


def check_atp(model: mj.Model) -> None:
    """AtP's score at each position of the last layer's resid_pre (gradient times the
    clean-to-corrupted change) equals a central finite difference of the metric."""
    clean, corrupted = _pair()
    resid, sites = _resid(model), reference_sites(model)
    site = resid[-1]
    scores = np.asarray(attribution.atp(model, clean, corrupted, METRIC, [site])[site])
    diff = jrun(model, corrupted, capture=sites).cache[site]
    diff = diff - jrun(model, clean, capture=sites).cache[site]
    h, fd = 1e-2, []
    for p in range(clean.shape[1]):
        d = diff * (jnp.arange(clean.shape[1]) == p)[None, :, None]
        deltas = {s: (d if s == site else jnp.zeros_like(d)) for s in resid}
        up = _metric_with(model, clean, METRIC, {s: h * x for s, x in deltas.items()})
        down = _metric_with(model, clean, METRIC, {s: -h * x for s, x in deltas.items()})
        fd.append(float(up - down) / (2 * h))
    fd = np.asarray(fd)
    assert np.abs(fd).max() > 1e-3, "the metric does not depend on the site"
    np.testing.assert_allclose(scores, fd, atol=2e-3, rtol=2e-2, err_msg=max_diff(scores, fd))


# ------------------------------------------------------------------------------- GGUF


def write_gguf(path, arch: str, metadata: dict, tensors: dict[str, np.ndarray]):
    """A GGUF file of `arch` with the given `{arch}.*` metadata and float32 tensors (numpy
    layout), written with the `gguf` package as llama.cpp's converter writes them."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    for key, value in metadata.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_string(key, value)
    for name, value in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(value, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _close(a, b) -> bool:
    """Config values equal, floats up to GGUF's float32 metadata."""
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(b))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def check_gguf(path, model: mj.Model, atol: float = 0.0) -> None:
    """`mj.load(path)` gives the family, config and parameters (equal, or within `atol`)
    of the HF-converted model."""
    import dataclasses

    loaded = mj.load(path)
    assert loaded.family.name == model.family.name
    assert type(loaded.config) is type(model.config)
    for f in dataclasses.fields(model.config):
        a, b = getattr(loaded.config, f.name), getattr(model.config, f.name)
        assert _close(a, b), f"config.{f.name}: {a!r} from the GGUF file, {b!r} from HF"
    got = jax.tree_util.tree_flatten_with_path(loaded.params)[0]
    want = jax.tree_util.tree_flatten_with_path(model.params)[0]
    assert [p for p, _ in got] == [p for p, _ in want]
    for (path_, a), (_, b) in zip(got, want):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and np.abs(a - b).max() <= atol, jax.tree_util.keystr(path_)


def hf_tensors(m) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in m.state_dict().items()}
