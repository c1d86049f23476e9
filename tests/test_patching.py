"""Patching sweeps against a plain loop of single patched forwards, on a tiny Llama."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_diff

import mechjax as mj
from mechjax import metrics, patching, sites
from mechjax.errors import InputError
from mechjax.patching import sweep as patching_sweep

B, P = 3, 6


@pytest.fixture(scope="module")
def pair():
    rng = np.random.RandomState(1)
    clean = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    corrupted = jnp.asarray(rng.randint(0, 50, (B, P)), jnp.int32)
    metric = metrics.LogitDiff(jnp.array([1, 2, 3]), jnp.array([4, 5, 6]))
    return clean, corrupted, metric


@functools.partial(jax.jit, static_argnames=("name",))
def _single(model, tokens, value, pos, head, metric, name):
    iv = mj.Patch(value, pos, head)
    return metric(mj.run(model, tokens, {name: iv}).logits)


def loop_grid(model, target, source, metric, kind, per_position=True):
    """The oracle: one patched forward per (layer, position, head), in Python loops."""
    n = model.config.n_layers
    names = [mj.act_name(kind, l) for l in range(n)]
    cache = mj.run(model, source, capture=names).cache
    out = []
    for name in names:
        head_axis = sites.axes(name)[1]
        heads = [None] if head_axis is None else range(cache[name].shape[head_axis])
        poss = range(P) if per_position else [None]
        out.append(
            [
                [
                    float(
                        _single(
                            model,
                            target,
                            cache[name],
                            None if p is None else jnp.array([p]),
                            None if h is None else jnp.array([h]),
                            metric,
                            name,
                        )
                    )
                    for h in heads
                ]
                for p in poss
            ]
        )
    return np.asarray(out)


@pytest.mark.parametrize(
    "kind,per_position",
    [
        ("resid_pre", True),
        ("z", True),
        ("k", False),
        ("pattern", True),
    ],
)
def test_sweep_equals_loop(tiny_llama, pair, kind, per_position):
    clean, corrupted, metric = pair
    res = patching.patch_sweep(
        tiny_llama, clean, corrupted, metric, kind, per_position=per_position, chunk_size=5
    )
    ref = loop_grid(tiny_llama, corrupted, clean, metric, kind, per_position)
    got = np.asarray(res.grid).reshape(ref.shape)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0, err_msg=max_diff(got, ref))
    assert res.axes[0] == "layer"


def test_noising_and_reference_points(tiny_llama, pair):
    clean, corrupted, metric = pair
    res = patching.patch_sweep(tiny_llama, clean, corrupted, metric, "mlp_out", mode="noise")
    ref = loop_grid(tiny_llama, clean, corrupted, metric, "mlp_out")[..., 0]
    np.testing.assert_allclose(np.asarray(res.grid), ref, atol=1e-5, rtol=0)
    # noising every position of resid_pre 0 with the corrupted run gives the corrupted run
    whole = patching.patch_sweep(
        tiny_llama, clean, corrupted, metric, "resid_pre", per_position=False
    )
    np.testing.assert_allclose(whole.grid[0], whole.clean_metric, atol=1e-5)
    np.testing.assert_allclose(whole.normalized()[0], 1.0, atol=1e-5)


def test_unrolled_fallback_equals_scan(tiny_llama, pair):
    clean, corrupted, metric = pair
    a = patching.patch_sweep(tiny_llama, clean, corrupted, metric, "z", chunk_size=5)
    b = patching.patch_sweep(
        tiny_llama, clean, corrupted, metric, "z", chunk_size=5, force_unrolled=True
    )
    np.testing.assert_allclose(np.asarray(a.grid), np.asarray(b.grid), atol=1e-5)


def test_one_program_no_recompile_per_chunk(tiny_llama, pair):
    clean, corrupted, _ = pair

    @chex.assert_max_traces(n=3)  # 2 calls in the reference program + 1 in the chunk body
    def metric(logits):
        return logits[:, -1, 0].mean()

    # 6 positions in chunks of 2: three calls of one compiled chunk program
    before = patching_sweep._sweep_chunk._cache_size()
    patching.patch_sweep(tiny_llama, clean, corrupted, metric, "resid_pre", chunk_size=2)
    assert patching_sweep._sweep_chunk._cache_size() == before + 1
    # a pytree metric with new answer ids reuses the compiled programs
    before = patching_sweep._sweep_chunk._cache_size(), patching_sweep._references._cache_size()
    for ids in ([1, 2, 3], [7, 8, 9]):
        m = metrics.LogitDiff(jnp.array(ids), jnp.array([4, 5, 6]))
        patching.patch_sweep(tiny_llama, clean, corrupted, m, "attn_out", chunk_size=4)
    after = patching_sweep._sweep_chunk._cache_size(), patching_sweep._references._cache_size()
    assert after == (before[0] + 1, before[1] + 1)


def test_run_from_layer_matches_forward(tiny_llama, pair):
    clean = pair[0]
    out = mj.run(tiny_llama, clean, capture=["blocks.1.hook_resid_pre"])
    logits = patching.run_from_layer(tiny_llama, 1, out.cache["blocks.1.hook_resid_pre"], clean)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(out.logits), atol=1e-5)


def test_path_patching(tiny_llama, pair):
    clean, corrupted, metric = pair
    last = tiny_llama.config.n_layers - 1
    recv = [(f"blocks.{last}.hook_resid_post", None)]
    res = patching.path_patch(tiny_llama, clean, corrupted, metric, recv)
    # senders in the last layer: the path to the final residual is the whole head effect
    z = mj.run(tiny_llama, corrupted, capture=[f"blocks.{last}.attn.hook_z"]).cache
    for h in range(tiny_llama.config.n_heads):
        iv = mj.patch(z[f"blocks.{last}.attn.hook_z"], heads=[h])
        ref = metric(mj.run(tiny_llama, clean, {f"blocks.{last}.attn.hook_z": iv}).logits)
        np.testing.assert_allclose(res.grid[last, h], ref, atol=1e-5)
    # receivers at layer 0's query input: senders cannot reach them
    res0 = patching.path_patch(
        tiny_llama, clean, corrupted, metric, [("blocks.0.attn.hook_q", [0])]
    )
    np.testing.assert_allclose(np.asarray(res0.grid), float(res0.clean_metric), atol=1e-5)


def test_bad_inputs(tiny_llama, pair):
    clean, corrupted, metric = pair
    with pytest.raises(mj.InputError, match="same shape"):
        patching.patch_sweep(tiny_llama, clean, corrupted[:, :4], metric)
    with pytest.raises(mj.InputError, match="empty sweep"):
        patching.patch_sweep(tiny_llama, clean, corrupted, metric, layers=[])
    with pytest.raises(mj.SiteError, match="unknown site kind"):
        patching.patch_sweep(tiny_llama, clean, corrupted, metric, "resid_middle")
    with pytest.raises(mj.InputError, match="mode"):
        patching.patch_sweep(tiny_llama, clean, corrupted, metric, mode="both")


def test_strategies_agree_and_bad_strategy(tiny_llama, pair):
    clean, corrupted, metric = pair
    layers = [1, 0]  # unsorted on purpose: rows follow the order given
    wave = patching.patch_sweep(
        tiny_llama, clean, corrupted, metric, "z", layers=layers, chunk_size=3
    )
    scan = patching.patch_sweep(
        tiny_llama, clean, corrupted, metric, "z", layers=layers, strategy="scan"
    )
    np.testing.assert_allclose(np.asarray(wave.grid), np.asarray(scan.grid), atol=1e-5)
    ref = loop_grid(tiny_llama, corrupted, clean, metric, "z")
    np.testing.assert_allclose(np.asarray(wave.grid), ref[[1, 0]], atol=1e-5)
    with pytest.raises(InputError, match="strategy"):
        patching.patch_sweep(tiny_llama, clean, corrupted, metric, "z", strategy="fast")
    with pytest.raises(InputError, match="repeated"):
        patching.patch_sweep(tiny_llama, clean, corrupted, metric, "z", layers=[1, 1])


def test_narrowed_metric_equals_full_logits(tiny_llama, pair):
    clean, corrupted, _ = pair
    ids = jnp.arange(clean.shape[0]) + 3
    for m in (
        metrics.LogitDiff(ids, ids + 1, positions=-2),
        metrics.Negate(metrics.AnswerProb(ids)),
        metrics.KLToClean(mj.run(tiny_llama, clean).logits, positions=1),
    ):
        out = mj.run(tiny_llama, corrupted, capture=["blocks.1.hook_resid_post"])
        resid = out.cache["blocks.1.hook_resid_post"]
        got = patching.metric_of_final(tiny_llama, resid, corrupted, None, m)
        np.testing.assert_allclose(float(got), float(m(out.logits)), atol=1e-5, rtol=1e-5)


def test_sweep_over_chosen_positions_equals_those_columns_of_the_full_grid(tiny_llama):
    """`positions=` patches only those positions; the grid's columns follow their order
    and equal the full sweep's; bad positions fail clearly."""
    import mechjax as mj
    from mechjax import patching
    from mechjax.metrics import LogitDiff

    rs = np.random.RandomState(5)
    clean = rs.randint(0, 50, (2, 7)).astype(np.int32)
    corrupted = rs.randint(0, 50, (2, 7)).astype(np.int32)
    metric = LogitDiff(np.asarray([3, 4]), np.asarray([5, 6]))
    for site in ("resid_pre", "z"):
        full = patching.patch_sweep(tiny_llama, clean, corrupted, metric, site)
        part = patching.patch_sweep(tiny_llama, clean, corrupted, metric, site, positions=[-1, 2])
        np.testing.assert_array_equal(part.positions, [6, 2])
        np.testing.assert_allclose(
            np.asarray(part.grid), np.asarray(full.grid)[:, [6, 2]], atol=1e-5
        )
    for bad, msg in (([], "positions is empty"), ([7], r"in \[-7, 7\)"), ([1, -6], "repeated")):
        with pytest.raises(mj.InputError, match=msg):
            patching.patch_sweep(tiny_llama, clean, corrupted, metric, positions=bad)
