"""Every edge of a tiny model of each family with a graph against hand patching.

For each edge u -> v, the reference is a clean forward pass written by hand with
`mj.run`: v's input site gets what u adds to the residual stream in the corrupted run
minus what it adds in the clean run. What a head adds is read from the model itself
(`hook_attn_out` with that head's `attn.hook_result` moved to its corrupted value), so
a post-attention norm (Gemma 2 and 3, OLMo 2) is inside the reference, not assumed away. `exact_edge_scores` (the circuit
with only that edge off, through `evaluate_graph`) must equal it for every edge; the
same call checks the full circuit (the clean run: entries off the graph, such as a
parallel block's same-layer head -> MLP pairs, change nothing), the empty one (the
corrupted run) and every out-edge of head a0.h0 off (= patching that head's result:
exact, not additive, under a post-norm). One compiled evaluation per family.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import jrun, max_diff

import mechjax as mj
from mechjax import circuits
from mechjax.io.families import family_of_module
from mechjax.models import gemma3, neox


def _neox(parallel=True):
    cfg = neox.Config(
        d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=48, d_vocab=50, n_ctx=64,
        rotary_dim=4, parallel_residual=parallel,
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
def pair(circuit_pair):
    return circuit_pair


@jax.jit
def _hand_runs(model, clean, metric, result_adds, input_adds):
    """(hook_attn_out of every layer, metric) of the clean run with `result_adds[l]`
    added to layer l's head results and `input_adds[site]` at each input site, vmapped
    over rows. Both uses below pass the same number of rows: one compiled program."""
    n = model.config.n_layers
    names = tuple(f"blocks.{l}.hook_attn_out" for l in range(n))

    def one(ra, ia):
        hooks = {f"blocks.{l}.attn.hook_result": mj.add(ra[l]) for l in range(n)}
        hooks.update({s: mj.add(x) for s, x in ia.items()})
        out = mj.run(model, clean, hooks, capture=names)
        return jnp.stack([out.cache[x] for x in names]), metric(out.logits)

    return jax.vmap(one)(result_adds, input_adds)


def _source_deltas(given, model, clean, corrupted, graph, metric, zero_inputs):
    """[n_src, b, p, d]: what each source adds to the stream, corrupted minus clean; and
    the metric of the clean run with head a0.h0's result patched from the corrupted
    one and of the clean run through the same program (read from the model's runs)."""
    n, h = model.config.n_layers, model.config.n_heads
    res = [f"blocks.{l}.attn.hook_result" for l in range(n)]
    sites = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_mlp_out" for l in range(n)] + res
    runs = [jrun(given, t, capture=sites) for t in (clean, corrupted)]  # the model as given
    c, k = runs[0].cache, runs[1].cache
    # one row per head: only that head's result moved to its corrupted value (the
    # layers after it run freely), then rows with nothing moved (the first is the
    # clean reference, the others pad to the edge count)
    diff = jnp.stack([k[x] - c[x] for x in res])  # [n, b, p, h, d]
    zero = jnp.zeros_like(diff)
    rows = [zero.at[l, :, :, i].set(diff[l, :, :, i]) for l in range(n) for i in range(h)]
    n_rows = len(next(iter(zero_inputs.values())))
    rows += [zero] * (n_rows - len(rows))
    att, m = _hand_runs(model, clean, metric, jnp.stack(rows), zero_inputs)
    heads = att[: n * h] - att[n * h : n * h + 1]  # att: [rows, n, b, p, d]
    refs = {"head0": float(m[0]), "clean_again": float(m[n * h]),
            "clean": float(metric(runs[0].logits)), "corrupted": float(metric(runs[1].logits))}  # fmt: skip
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
    return np.asarray(jnp.stack(out)), refs


def _dst_site(name, n_layers):
    if name == "logits":
        return f"blocks.{n_layers - 1}.hook_resid_post", None
    if name.startswith("m"):
        return f"blocks.{name[1:]}.hook_mlp_in", None
    head, qkv = name[:-3], name[-2]
    l, i = (int(x[1:]) for x in head.split("."))
    return f"blocks.{l}.hook_{qkv}_input", i


def _hand_edges(model, clean, corrupted, metric, graph):
    """metric of the hand-patched forward with each edge alone corrupted, [n_edges], and
    the reference runs of `_source_deltas`."""
    given, model = model, circuits.ungroup_gqa(model)  # every head its own k and v input
    idx = np.argwhere(graph.valid)
    n, h, d = model.config.n_layers, model.config.n_heads, model.config.d_model
    b, p = clean.shape
    sites = {_dst_site(x, n)[0] for x in graph.dst}
    per_site = {
        s: np.zeros((len(idx), b, p) + ((h,) if "_input" in s else ()) + (d,), np.float32)
        for s in sites
    }
    zero = {s: jnp.asarray(x) for s, x in per_site.items()}
    deltas, refs = _source_deltas(given, model, clean, corrupted, graph, metric, zero)
    for e, (u, v) in enumerate(idx):  # edge e: only v's input site (and head) moves
        site, head = _dst_site(graph.dst[v], n)
        if head is None:
            per_site[site][e] = deltas[u]
        else:
            per_site[site][e, :, :, head] = deltas[u]
    arrays = {s: jnp.asarray(x) for s, x in per_site.items()}
    rows = jnp.zeros((len(idx), n, b, p, h, d))
    return np.asarray(_hand_runs(model, clean, metric, rows, arrays)[1]), refs


def _tiny(family, **extra):
    """A tiny random model of `family` (2 layers, 4 heads, GQA where the family has it)."""
    import importlib

    def build():
        mod = importlib.import_module(f"mechjax.models.{family}")
        kw = dict(d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=48, d_vocab=50, n_ctx=64)
        cfg = mod.Config(**kw, **extra)
        p = mod.init(jax.random.PRNGKey(4), cfg, scale=0.3)
        for b in p["blocks"]:  # post-norm gains far from their neutral value
            if "ln1_post" in b:
                b["ln1_post"]["w"] = b["ln1_post"]["w"] + 0.5
        return mj.Model(p, cfg, family_of_module(family))

    return build


BUILDERS = {
    "neox": _neox,
    "gemma3": _gemma3,
    "qwen3": _tiny("qwen3", n_kv_heads=2),
    "phi3": _tiny("phi3", n_kv_heads=2),
    "mixtral": _tiny("mixtral", n_kv_heads=2, n_experts=4, top_k=2),
    "gptj": _tiny("gptj", rotary_dim=4),
    "gemma2": _tiny("gemma2", n_kv_heads=2),
    "olmo2": _tiny("olmo2", n_kv_heads=2),
}


def check_every_edge(model, pair):
    """The module docstring's checks for one model; returns its graph."""
    clean, corrupted, metric = pair
    graph = circuits.graph_of(model)
    idx = np.argwhere(graph.valid)
    hand, ref = _hand_edges(model, clean, corrupted, metric, graph)
    # runs of the model as given; the circuit code and the hand runs ungroup its heads
    base, corr = ref["clean"], ref["corrupted"]
    np.testing.assert_allclose(ref["clean_again"], base, atol=1e-5)
    assert np.abs(hand - base).max() > 1e-2  # edges matter, so the comparison can fail
    assert abs(ref["head0"] - base) > 1e-3
    # the single-edge circuits, then the full, the empty and all of a0.h0's out-edges off
    masks = np.ones((len(idx) + 3,) + graph.valid.shape, bool)
    masks[np.arange(len(idx)), idx[:, 0], idx[:, 1]] = False
    masks[-3], masks[-2], masks[-1] = graph.valid, False, graph.valid
    masks[-1, graph.src.index("a0.h0")] = False
    got = np.asarray(circuits.evaluate_graph(model, clean, corrupted, metric, masks))
    np.testing.assert_allclose(got[:-3], hand, atol=2e-5, err_msg=max_diff(got[:-3], hand))
    want = [base, corr, ref["head0"]]
    np.testing.assert_allclose(got[-3:], want, atol=5e-5)
    exact, _ = circuits.exact_edge_scores(model, clean, corrupted, metric)
    ex = np.asarray(exact)[idx[:, 0], idx[:, 1]]
    np.testing.assert_allclose(ex, hand - base, atol=2e-5, err_msg=max_diff(ex, hand - base))
    assert np.all(np.asarray(exact)[~graph.valid] == 0)
    return graph


@pytest.mark.parametrize("family", ["llama", *BUILDERS])
def test_every_edge_equals_hand_patching(family, tiny_llama, pair):
    model = BUILDERS.get(family, lambda: tiny_llama)()
    graph = check_every_edge(model, pair)
    parallel = family in ("neox", "gptj")
    assert graph.n_edges == (102 if parallel else 110)
    if parallel:  # no same-layer head -> MLP edges (EAP-IG: 110 - 2 x 4)
        S, D = graph.src.index, graph.dst.index
        for l in range(2):
            assert not graph.valid[S(f"a{l}.h0"), D(f"m{l}")]
            np.testing.assert_array_equal(
                graph.valid[:, D(f"m{l}")], graph.valid[:, D(f"a{l}.h0<q>")]
            )
        assert graph.valid[S("a0.h0"), D("m1")] and graph.valid[S("m0"), D("a1.h0<q>")]
    if family == "neox":  # control: the sequential NeoX keeps them
        assert circuits.graph_of(_neox(parallel=False)).n_edges == 110
