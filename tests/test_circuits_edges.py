"""Every edge of a parallel NeoX, a Gemma 3 and a Llama tiny model against hand patching.

For each edge u -> v, the reference is a clean forward pass written by hand with
`mj.run`: v's input site gets what u adds to the residual stream in the corrupted run
minus what it adds in the clean run. What a head adds is read from the model itself
(`hook_attn_out` with that head's `attn.hook_result` patched), so Gemma 3's
post-attention norm is inside the reference, not assumed away. `evaluate_graph` with
only that edge off, and `exact_edge_scores`, must equal it for every edge.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import jrun, max_diff

import mechjax as mj
from mechjax import circuits, metrics
from mechjax.io.families import family_of_module
from mechjax.models import gemma3, neox

B, P = 2, 5


def _neox():
    cfg = neox.Config(
        d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=48, d_vocab=50, n_ctx=64,
        rotary_dim=4, parallel_residual=True,
    )  # fmt: skip
    return mj.Model(neox.init(jax.random.PRNGKey(2), cfg, scale=0.3), cfg, family_of_module("neox"))


def _gemma3():
    cfg = gemma3.Config(
        d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=48, d_vocab=50, n_ctx=64
    )
    p = gemma3.init(jax.random.PRNGKey(3), cfg, scale=0.3)
    for b in p["blocks"]:  # norm gains far from 1, so a linear treatment of the norm fails
        b["ln1_post"]["w"] = b["ln1_post"]["w"] + 0.5
    return mj.Model(p, cfg, family_of_module("gemma3"))


@pytest.fixture(scope="module")
def pair():
    rng = np.random.RandomState(5)
    clean = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    corrupted = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    return clean, corrupted, metrics.Negate(metrics.LogitDiff(jnp.array([1, 2]), jnp.array([3, 4])))


@jax.jit
def _attn_outs(model, clean, results):
    """hook_attn_out of every layer with each layer's head results replaced, vmapped."""
    n = model.config.n_layers
    names = tuple(f"blocks.{l}.hook_attn_out" for l in range(n))

    def one(res):
        hooks = {f"blocks.{l}.attn.hook_result": mj.patch(res[l]) for l in range(n)}
        return jnp.stack([mj.run(model, clean, hooks, capture=names).cache[x] for x in names])

    return jax.vmap(one)(results)


def _source_deltas(model, clean, corrupted, graph):
    """[n_src, b, p, d]: what each source adds to the stream, corrupted minus clean."""
    n, h = model.config.n_layers, model.config.n_heads
    res = [f"blocks.{l}.attn.hook_result" for l in range(n)]
    sites = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_mlp_out" for l in range(n)] + res
    c = jrun(model, clean, capture=sites).cache
    k = jrun(model, corrupted, capture=sites).cache
    # one row per head: the clean results with that one head's corrupted
    clean_res = jnp.stack([c[x] for x in res])  # [n, b, p, h, d]
    rows = [clean_res.at[l, :, :, i].set(k[res[l]][:, :, i]) for l in range(n) for i in range(h)]
    att = _attn_outs(model, clean, jnp.stack(rows + [clean_res]))  # [rows + 1, n, b, p, d]
    heads = att[:-1] - att[-1:]
    out = []
    for name in graph.src:
        if name == "input":
            out.append(k["blocks.0.hook_resid_pre"] - c["blocks.0.hook_resid_pre"])
        elif name.startswith("m"):
            site = f"blocks.{name[1:]}.hook_mlp_out"
            out.append(k[site] - c[site])
        else:  # the layer's attention output with this one head's result corrupted
            l, i = (int(x[1:]) for x in name.split("."))
            out.append(heads[l * h + i, l])
    return jnp.stack(out)


@jax.jit
def _patched(model, clean, metric, deltas):
    """metric(clean run with every input site += its delta), vmapped over the edges."""
    return jax.vmap(
        lambda d: metric(mj.run(model, clean, {s: mj.add(x) for s, x in d.items()}).logits)
    )(deltas)


def _dst_site(name, n_layers):
    if name == "logits":
        return f"blocks.{n_layers - 1}.hook_resid_post", None
    if name.startswith("m"):
        return f"blocks.{name[1:]}.hook_mlp_in", None
    head, qkv = name[:-3], name[-2]
    l, i = (int(x[1:]) for x in head.split("."))
    return f"blocks.{l}.hook_{qkv}_input", i


def _hand_edges(model, clean, corrupted, metric, graph):
    """metric of the hand-patched forward with each edge alone corrupted, [n_edges]."""
    model = circuits.ungroup_gqa(model)  # every head its own k and v input, as the graph
    deltas = np.asarray(_source_deltas(model, clean, corrupted, graph))
    idx = np.argwhere(graph.valid)
    n, h = model.config.n_layers, model.config.n_heads
    b, p, d = deltas.shape[1:]
    sites = {_dst_site(x, n)[0] for x in graph.dst}
    per_site = {
        s: np.zeros((len(idx), b, p) + ((h,) if "_input" in s else ()) + (d,), np.float32)
        for s in sites
    }
    for e, (u, v) in enumerate(idx):  # edge e: only v's input site (and head) moves
        site, head = _dst_site(graph.dst[v], n)
        if head is None:
            per_site[site][e] = deltas[u]
        else:
            per_site[site][e, :, :, head] = deltas[u]
    arrays = {s: jnp.asarray(x) for s, x in per_site.items()}
    return np.asarray(_patched(model, clean, metric, arrays))


@pytest.mark.parametrize("family", ["neox", "gemma3", "llama"])
def test_every_edge_equals_hand_patching(family, tiny_llama, pair):
    model = {"neox": _neox, "gemma3": _gemma3}.get(family, lambda: tiny_llama)()
    clean, corrupted, metric = pair
    graph = circuits.graph_of(model)
    if family == "neox":
        assert graph.n_edges == 102  # no same-layer head -> MLP edges in a parallel block
    idx = np.argwhere(graph.valid)
    hand = _hand_edges(model, clean, corrupted, metric, graph)
    base = float(metric(jrun(model, clean).logits))
    assert np.abs(hand - base).max() > 1e-2  # edges matter, so the comparison can fail
    masks = np.repeat(graph.valid[None], len(idx), 0)
    masks[np.arange(len(idx)), idx[:, 0], idx[:, 1]] = False
    got = np.asarray(circuits.evaluate_graph(model, clean, corrupted, metric, masks))
    np.testing.assert_allclose(got, hand, atol=2e-5, err_msg=max_diff(got, hand))
    exact, _ = circuits.exact_edge_scores(model, clean, corrupted, metric)
    ex = np.asarray(exact)[idx[:, 0], idx[:, 1]]
    np.testing.assert_allclose(ex, hand - base, atol=2e-5, err_msg=max_diff(ex, hand - base))
