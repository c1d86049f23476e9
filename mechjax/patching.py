"""Activation patching sweeps and path patching, each one compiled program.

`patch_sweep` patches one site kind (`resid_pre`, `attn_out`, `mlp_out`, `z`, `q`, `k`,
`v`, `pattern`, `result`, ...) at every layer x position (x head) and returns the metric
after each patch:

- denoising (default): run the corrupted prompt, patch in the clean activation;
  noising: run the clean prompt, patch in the corrupted activation;
- patching at layer L leaves layers < L unchanged, so each layer's sweep starts from the
  target run's cached `resid_pre` of layer L instead of recomputing the prefix;
- the default strategy ("wave") advances all the patched runs of a chunk of elements
  together: block l runs once as a plain batch on every run patched below l, and once
  (vmapped over the elements' patches) on the runs that start at l; so each block is a
  large matmul and nothing is stacked or sliced. The "scan" strategy instead compiles
  one layer body (`lax.map` over layers, `lax.fori_loop` from a dynamic start layer):
  faster to compile, slower to run;
- the metric pytrees of `mechjax.metrics` read one position per row, so only that row
  is unembedded (`metric_of_final`);
- elements (positions, heads) are chunked to a memory budget and chunks are a
  `lax.map`, so the whole sweep is one XLA program and nothing recompiles per chunk.

A block is the family's own forward run on a one-block parameter slice with the
residual stream patched in at `blocks.0.hook_resid_pre` (XLA drops the unused
embedding and unembedding), so any family whose blocks do not depend on their index
works. A family whose blocks do (GPT-2 with `scale_attn_by_inverse_layer_idx`) falls
back to unrolled layers, still with the prefix reused.

`path_patch` patches the path sender heads -> receiver sites (Wang et al. 2022): the
senders take their corrupted output while every other head is frozen to its clean
output, the receivers' inputs are recorded, and a clean run with only the receivers
patched gives the metric.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import metrics as metrics_mod
from mechjax import sites as sites_mod
from mechjax.errors import InputError
from mechjax.hooks import HookContext
from mechjax.interventions import Patch, _as_index
from mechjax.model import Model, run

__all__ = [
    "PatchResult",
    "metric_of_final",
    "patch_sweep",
    "path_patch",
    "run_from_layer",
    "run_metric",
    "split_static",
]


class PatchResult(NamedTuple):
    """A patching grid and its reference points.

    grid: metric after each patch, axes named by `axes` (`layer`, `pos`, `head`).
    clean_metric / corrupted_metric: the metric of the unpatched clean / corrupted runs.
    """

    grid: jax.Array
    axes: tuple
    clean_metric: jax.Array
    corrupted_metric: jax.Array
    layers: np.ndarray
    positions: np.ndarray | None = None  # the grid's `pos` axis, when not every position

    def normalized(self) -> jax.Array:
        """(grid - corrupted) / (clean - corrupted): 0 = corrupted run, 1 = clean run."""
        return (self.grid - self.corrupted_metric) / (self.clean_metric - self.corrupted_metric)


# ------------------------------------------------------------------------ static split


class _Static:
    """A hashable holder for the non-array part of a metric (functions, structure)."""

    def __init__(self, treedef, leaves, mask):
        self.treedef, self.leaves, self.mask = treedef, tuple(leaves), tuple(mask)

    def _key(self):
        return (
            self.treedef,
            tuple(id(x) if not _hashable(x) else x for x in self.leaves),
            self.mask,
        )

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key() == other._key()


def _hashable(x) -> bool:
    try:
        hash(x)
        return True
    except TypeError:
        return False


def split_static(tree) -> tuple[list, _Static]:
    """(array leaves, hashable rest): pass the first to `jit`, the second as static."""
    leaves, treedef = jax.tree.flatten(tree)
    mask = [
        isinstance(x, (jax.Array, np.ndarray, np.generic, float, int)) and not isinstance(x, bool)
        for x in leaves
    ]
    arrays = [jnp.asarray(x) for x, m in zip(leaves, mask) if m]
    return arrays, _Static(treedef, [None if m else x for x, m in zip(leaves, mask)], mask)


def join_static(arrays, static: _Static):
    it = iter(arrays)
    leaves = [next(it) if m else x for x, m in zip(static.leaves, static.mask)]
    return jax.tree.unflatten(static.treedef, leaves)


# ----------------------------------------------------------------------- layer helpers


def _check_pair(clean, corrupted):
    clean, corrupted = jnp.asarray(clean), jnp.asarray(corrupted)
    if clean.ndim != 2 or corrupted.ndim != 2:
        raise InputError(
            f"clean and corrupted tokens must be [batch, pos], got shapes "
            f"{tuple(clean.shape)} and {tuple(corrupted.shape)}"
        )
    if clean.shape != corrupted.shape:
        raise InputError(
            f"clean and corrupted tokens must have the same shape to be patched position by "
            f"position, got {tuple(clean.shape)} (clean) and {tuple(corrupted.shape)} "
            "(corrupted); pad or pick equal-length pairs"
        )
    return clean, corrupted


def _indexable_blocks(model: Model) -> bool:
    """True if a block can run as "layer 0" given its own index (`_block(..., layer=)`):
    false for GPT-2's `scale_attn_by_inverse_layer_idx`, whose code reads the index."""
    return not getattr(model.config, "scale_attn_by_inverse_layer_idx", False)


def _layer_invariant(model: Model) -> bool:
    """True if every block runs the same code whatever its index (so one traced layer
    body serves all of them): no index-dependent code, and one layer type throughout
    (Gemma 3 interleaves sliding-window layers, local RoPE, with global ones)."""
    types = getattr(model.config, "layer_types", None)
    return _indexable_blocks(model) and (not types or len(set(types)) == 1)


def _layer_config(cfg, layer: int | None):
    """`cfg` with layer 0 made to act as `layer` (its layer type), for one-block runs."""
    types = getattr(cfg, "layer_types", None)
    if layer is None or not types or types[0] == types[layer]:
        return cfg
    return dataclasses.replace(cfg, layer_types=(types[layer],) + tuple(types[1:]))


def _block(
    model: Model,
    block_params,
    resid,
    tokens,
    attention_mask,
    hooks=None,
    capture=(),
    layer: int | None = None,
):
    """One block of the family's forward, from `resid` (its resid_pre) to its resid_post.

    `hooks` and `capture` use layer-0 site names (`blocks.0.attn.hook_z`). `layer`: the
    block's index in the model, for families whose layers differ in type (required
    there: without it the block runs as layer 0, e.g. Gemma 3's sliding-window RoPE).
    """
    params = {**model.params, "blocks": [block_params]}
    ivs = {"blocks.0.hook_resid_pre": (Patch(resid),)}
    for site, iv in (hooks or {}).items():
        ivs[site] = ivs.get(site, ()) + tuple(iv if isinstance(iv, (list, tuple)) else (iv,))
    ctx = HookContext(ivs, ("blocks.0.hook_resid_post", *capture))
    model.family.forward(
        params, tokens, _layer_config(model.config, layer), hook=ctx, attention_mask=attention_mask
    )
    return ctx.cache["blocks.0.hook_resid_post"], ctx.cache


def _unembed(model: Model, resid, tokens, attention_mask):
    """Final norm and unembedding of a last-layer residual stream."""
    params = {**model.params, "blocks": []}
    ivs = {"hook_embed": (Patch(resid),)}
    if "hook_pos_embed" in model.sites:
        ivs["hook_pos_embed"] = (Patch(jnp.zeros((), resid.dtype)),)
    ctx = HookContext(ivs)
    return model.family.forward(
        params, tokens, model.config, hook=ctx, attention_mask=attention_mask
    )


def metric_of_final(model: Model, resid, tokens, attention_mask, metric):
    """metric(logits) from the last layer's resid_post, unembedding only the rows it reads.

    For the metric pytrees of `mechjax.metrics` (see `metrics.narrow`) only one position
    per batch row is unembedded; any other callable gets the full logits.
    """
    narrowed = metrics_mod.narrow(metric, tokens.shape[1])
    if narrowed is None:
        return metric(_unembed(model, resid, tokens, attention_mask))
    pos, one = narrowed
    rows = jnp.broadcast_to(pos, tokens.shape[:1])[:, None]
    resid = jnp.take_along_axis(resid, rows[:, :, None], axis=1)
    tokens = jnp.take_along_axis(tokens, rows, axis=1)
    mask = None if attention_mask is None else jnp.take_along_axis(attention_mask, rows, axis=1)
    return one(_unembed(model, resid, tokens, mask))


def run_metric(
    model: Model, tokens, hooks, metric, *, capture=(), attention_mask=None, rows=slice(None)
):
    """(metric of the logits of `tokens[rows]`, cache of `capture`) for a hooked run.

    Like `metric(run(...).logits[rows])`, but the unembedding is only done where the
    metric reads (`metric_of_final`): XLA does not drop the unused logits of a full
    [batch, pos, d_vocab] matmul by itself.
    """
    final = sites_mod.act_name("resid_post", model.config.n_layers - 1)
    sites = model.sites
    after = set(sites[sites.index(final) + 1 :]) if final in sites else set()
    if final not in sites or after & (set(hooks or ()) | set(capture)):
        # no final residual site, or hooks/captures on the final norm: full logits
        out = run(model, tokens, hooks, capture=capture, attention_mask=attention_mask)
        return metric(out.logits[rows]), out.cache
    out = run(
        model,
        tokens,
        hooks,
        capture=tuple(dict.fromkeys((*capture, final))),
        attention_mask=attention_mask,
    )
    mask = None if attention_mask is None else attention_mask[rows]
    value = metric_of_final(model, out.cache[final][rows], tokens[rows], mask, metric)
    return value, {k: out.cache[k] for k in capture}


def _stack_blocks(model: Model):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *model.params["blocks"])


def run_from_layer(
    model: Model,
    layer,
    resid,
    tokens,
    *,
    attention_mask=None,
    hooks=None,
    stacked=None,
    metric=None,
):
    """Logits of the model run from `resid` = resid_pre of `layer` (may be traced).

    `hooks` (layer-0 site names) apply to `layer` only; later layers run plainly. With
    `metric`, returns `metric(logits)` instead, unembedding only the positions it reads
    (`metric_of_final`).
    """
    if not _layer_invariant(model):
        raise InputError(
            f"run_from_layer traces one layer body for every layer; the {model.family.name!r} "
            "family's layers differ (layer types or index-dependent code): use "
            "`run(model, tokens, hooks={act_name('resid_pre', layer): patch(resid)})`"
        )
    stacked = _stack_blocks(model) if stacked is None else stacked
    n = model.config.n_layers
    take = lambda l: jax.tree.map(lambda x: x[l], stacked)  # noqa: E731
    resid, _ = _block(model, take(layer), resid, tokens, attention_mask, hooks)
    step = lambda l, r: _block(model, take(l), r, tokens, attention_mask)[0]  # noqa: E731
    resid = jax.lax.fori_loop(layer + 1, n, step, resid)
    if metric is not None:
        return metric_of_final(model, resid, tokens, attention_mask, metric)
    return _unembed(model, resid, tokens, attention_mask)


# ----------------------------------------------------------------------------- sweeps


def _site_kind(site: str) -> str:
    sites_mod.act_name(site, 0)  # raises SiteError with the valid kinds
    return site


def _elements(n_pos: int, n_heads: int | None, per_position: bool, positions=None):
    """Index arrays (positions [E, k], heads [E, 1] or None) and the grid shape."""
    pos = np.arange(n_pos) if positions is None else np.asarray(positions, np.int64)
    k = pos.size
    if n_heads is None:
        if per_position:
            return pos[:, None], None, (k,), ("pos",)
        return pos[None, :], None, (), ()
    if per_position:
        p, h = np.meshgrid(pos, np.arange(n_heads), indexing="ij")
        return p.reshape(-1, 1), h.reshape(-1, 1), (k, n_heads), ("pos", "head")
    return (np.tile(pos[None], (n_heads, 1)), np.arange(n_heads)[:, None], (n_heads,), ("head",))


def _chunk(
    model: Model,
    tokens_shape,
    n_elems: int,
    chunk_size,
    memory_mb: float,
    streams: int = 1,
    logit_rows: int | None = None,
) -> int:
    """Sweep elements per vmapped batch: `chunk_size`, or as many as fit `memory_mb`.

    An element holds `streams` runs at once (the patched layers of `_sweep_wave`), each
    with its block activations, and unembeds `logit_rows` rows per batch row (default
    every position).
    """
    if chunk_size is not None:
        return max(1, min(int(chunk_size), n_elems))
    c = model.config
    b, p = tokens_shape
    rows = p if logit_rows is None else logit_rows
    act = 4 * b * p * (8 * c.d_model + 3 * c.d_mlp + 3 * c.n_heads * p)
    per = streams * (act + 4 * b * rows * c.d_vocab)
    return max(1, min(n_elems, int(memory_mb * 2**20 // per)))


def patch_sweep(
    model: Model,
    clean,
    corrupted,
    metric: Callable[[jax.Array], jax.Array],
    site: str = "resid_pre",
    *,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    per_position: bool = True,
    mode: str = "denoise",
    attention_mask=None,
    chunk_size: int | None = None,
    memory_mb: float = 512.0,
    strategy: str = "wave",
    force_unrolled: bool = False,
) -> PatchResult:
    """Patch `site` at every layer x position (x head) and return the metric grid.

    Args:
      model: the model.
      clean, corrupted: int [batch, pos] token arrays of the same shape.
      metric: `logits -> scalar` (e.g. `mechjax.metrics.LogitDiff(answers, wrongs)`; a
        pytree metric's arrays are traced, so new data reuses the compiled program).
      site: a site kind of `mechjax.act_name` with a layer (`resid_pre`, `attn_out`,
        `mlp_out`, `z`, `q`, `k`, `v`, `pattern`, `result`, `q_input`, ...).
      layers: layers to sweep (default all).
      positions: positions to patch (default all; negative counts from the end); the
        grid's `pos` axis then follows this order (`PatchResult.positions`). A new set
        of the same size reuses the compiled program.
      per_position: patch each position separately (else all of them at once).
      mode: "denoise" (clean into corrupted) or "noise" (corrupted into clean).
      attention_mask: optional [batch, pos] bool shared by both runs.
      chunk_size / memory_mb: sweep elements run together (default: fit `memory_mb`).
      strategy: "wave" (default: the patched runs advance together layer by layer, one
        large batch per block; fastest to run, but every layer is compiled separately,
        about 15 s on SmolLM2-135M) or "scan" (one compiled layer body started at a
        dynamic layer; about 4x faster to compile, about 1.5x slower to run). Families
        whose blocks depend on their index (GPT-2 with `scale_attn_by_inverse_layer_idx`)
        always use unrolled layers.
      force_unrolled: use the unrolled-layers program even if another one applies.

    Returns a `PatchResult` whose grid is `[layer, pos]`, `[layer, pos, head]`,
    `[layer, head]` or `[layer]`.
    """
    clean, corrupted = _check_pair(clean, corrupted)
    if mode not in ("denoise", "noise"):
        raise InputError(f"mode {mode!r}; valid: 'denoise', 'noise'")
    _site_kind(site)
    n = model.config.n_layers
    layers = np.arange(n) if layers is None else np.asarray(list(layers), np.int64)
    if layers.size == 0 or clean.shape[1] == 0:
        raise InputError("empty sweep: no layers or no positions to patch")
    if layers.min() < 0 or layers.max() >= n:
        raise InputError(f"layers must be in [0, {n}), got {layers.tolist()}")
    if len(set(layers.tolist())) != layers.size:
        raise InputError(f"layers has repeated entries: {layers.tolist()}")
    target, source = (corrupted, clean) if mode == "denoise" else (clean, corrupted)
    name0 = sites_mod.act_name(site, 0)
    sites_mod.check([name0], model.sites)
    head_axis = sites_mod.axes(name0)[1]
    n_heads = None
    if head_axis is not None:
        shape = jax.eval_shape(lambda m, t: run(m, t, capture=[name0]).cache[name0], model, source)
        n_heads = shape.shape[head_axis]
    P = clean.shape[1]
    if positions is not None:
        pos_arr = np.asarray(list(positions), np.int64).reshape(-1)
        if pos_arr.size == 0:
            raise InputError("empty sweep: positions is empty")
        if pos_arr.min() < -P or pos_arr.max() >= P:
            raise InputError(
                f"positions must be in [-{P}, {P}) for prompts of {P} tokens, "
                f"got {pos_arr.tolist()}"
            )
        pos_arr = pos_arr % P
        if len(set(pos_arr.tolist())) != pos_arr.size:
            raise InputError(f"positions has repeated entries: {pos_arr.tolist()}")
        positions = pos_arr
    pos_idx, head_idx, cell, cell_axes = _elements(P, n_heads, per_position, positions)
    arrays, static = split_static(metric)
    if strategy not in ("wave", "scan"):
        raise InputError(f"strategy {strategy!r}; valid: 'wave', 'scan'")
    if force_unrolled or not _indexable_blocks(model):
        strategy = "unrolled"
    elif strategy == "scan" and not _layer_invariant(model):
        strategy = "wave"  # layers of different types: each block traced with its index
    narrowable = metrics_mod.narrow(metric, clean.shape[1]) is not None
    chunk = _chunk(
        model,
        clean.shape,
        len(pos_idx),
        chunk_size,
        memory_mb,
        streams=len(layers) if strategy == "wave" else 1,
        logit_rows=1 if narrowable else None,
    )
    grid, m_t, m_s = _patch_sweep(
        model,
        target,
        source,
        attention_mask,
        jnp.asarray(pos_idx, jnp.int32),
        None if head_idx is None else jnp.asarray(head_idx, jnp.int32),
        arrays,
        static=static,
        kind=site,
        chunk=chunk,
        layers=tuple(int(x) for x in layers),
        strategy=strategy,
    )
    grid = grid.reshape((len(layers),) + cell)
    clean_m, corr_m = (m_s, m_t) if mode == "denoise" else (m_t, m_s)
    return PatchResult(grid, ("layer",) + cell_axes, clean_m, corr_m, layers, positions)


@functools.partial(jax.jit, static_argnames=("static", "kind", "chunk", "layers", "strategy"))
def _patch_sweep(
    model, target, source, mask, pos_idx, head_idx, arrays, *, static, kind, chunk, layers, strategy
):
    """The whole sweep as one program: both cached runs, then every patched run."""
    metric = join_static(arrays, static)
    names = [sites_mod.act_name(kind, l) for l in layers]
    resid_names = [sites_mod.act_name("resid_pre", l) for l in layers]
    # target and source as one batch: one program for both reference runs
    b = target.shape[0]
    both = run(
        model,
        jnp.concatenate([target, source]),
        capture=tuple(dict.fromkeys(resid_names + names)),
        attention_mask=None if mask is None else jnp.concatenate([mask, mask]),
    )
    resid_pre = jnp.stack([both.cache[x][:b] for x in resid_names])
    src = jnp.stack([both.cache[x][b:] for x in names])
    t_logits, s_logits = both.logits[:b], both.logits[b:]
    if strategy == "unrolled":
        grid = _sweep_unrolled(
            model, target, mask, resid_pre, src, pos_idx, head_idx, metric, kind, chunk, layers
        )
    elif strategy == "scan":
        grid = _sweep_scan(
            model,
            target,
            mask,
            resid_pre,
            src,
            jnp.asarray(layers, jnp.int32),
            pos_idx,
            head_idx,
            metric,
            kind,
            chunk,
        )
    else:
        grid = _sweep_wave(
            model, target, mask, resid_pre, src, pos_idx, head_idx, metric, kind, chunk, layers
        )
    return grid, metric(t_logits), metric(s_logits)


def _patch_iv(value, pos, head):
    return Patch(value, pos, head)


def _sweep_wave(
    model, target, mask, resid_pre, src, pos_idx, head_idx, metric, kind, chunk, layers
):
    """The patched runs of a chunk of sweep elements, advanced together layer by layer.

    The run patched at layer L starts from the target run's cached resid_pre of L.
    Walking the layers in order, block l runs once, as one plain batch, on every run
    already started (patched at a layer < l), and once, with each element's patch
    (vmapped), on the runs that start at l. So every block is a large batched matmul,
    no layer's weights are stacked or sliced, and the prefix below a patched layer is
    never recomputed. Chunks of elements (padded to equal size) are a `lax.map`.
    """
    n = model.config.n_layers
    blocks = model.params["blocks"]
    site0 = sites_mod.act_name(kind, 0)
    order = sorted(range(len(layers)), key=lambda i: layers[i])
    entry = {layers[i]: i for i in order}
    b, p = target.shape
    d = resid_pre.shape[-1]
    n_elems = pos_idx.shape[0]
    c = min(chunk, n_elems)
    n_chunks = -(-n_elems // c)

    def pad(x):
        if x is None:
            return None
        x = jnp.concatenate([x, jnp.repeat(x[-1:], n_chunks * c - n_elems, axis=0)])
        return x.reshape((n_chunks, c) + x.shape[1:])

    def tiled(x, k):
        return None if x is None else jnp.tile(x, (k, 1))

    def wave(e):
        pos, head = e
        streams = None  # [started runs, c, batch, pos, d_model]
        for l in range(layers[order[0]], n):
            parts = []
            if streams is not None:
                k = streams.shape[0] * c
                out = _block(
                    model,
                    blocks[l],
                    streams.reshape((k * b, p, d)),
                    tiled(target, k),
                    tiled(mask, k),
                    layer=l,
                )[0]
                parts.append(out.reshape(streams.shape))
            if l in entry:
                i = entry[l]

                def start(ps, hd, i=i, l=l):
                    hooks = {site0: _patch_iv(src[i], ps, hd)}
                    return _block(model, blocks[l], resid_pre[i], target, mask, hooks, layer=l)[0]

                parts.append(jax.vmap(start)(pos, head)[None])
            streams = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
        flat = streams.reshape((-1, b, p, d))
        vals = jax.vmap(lambda r: metric_of_final(model, r, target, mask, metric))(flat)
        return vals.reshape(streams.shape[:2])  # [layers in entry order, c]

    chunks = (pad(pos_idx), pad(head_idx))
    if n_chunks == 1:
        grid = wave(jax.tree.map(lambda x: x[0], chunks))
    else:
        grid = jax.lax.map(wave, chunks)  # [n_chunks, layers, c]
        grid = jnp.moveaxis(grid, 0, 1).reshape(len(layers), n_chunks * c)
    return grid[jnp.argsort(jnp.asarray(order)), :n_elems]  # rows back in `layers` order


def _sweep_scan(
    model, target, mask, resid_pre, src, layers, pos_idx, head_idx, metric, kind, chunk
):
    """Layers as a `lax.map` over one traced layer body, started at a dynamic layer.

    One block is compiled (about 4x faster to compile than `_sweep_wave`), at the price
    of stacking the blocks' weights, slicing one layer per step and smaller matmuls
    (about 1.5x slower to run on SmolLM2-135M).
    """
    stacked = _stack_blocks(model)
    site0 = sites_mod.act_name(kind, 0)

    def layer_fn(xs):
        layer, r0, value = xs

        def element(e):
            pos, head = e
            hooks = {site0: _patch_iv(value, pos, head)}
            return run_from_layer(
                model,
                layer,
                r0,
                target,
                attention_mask=mask,
                hooks=hooks,
                stacked=stacked,
                metric=metric,
            )

        return jax.lax.map(element, (pos_idx, head_idx), batch_size=chunk)

    return jax.lax.map(layer_fn, (layers, resid_pre, src))


def _sweep_unrolled(
    model, target, mask, resid_pre, src, pos_idx, head_idx, metric, kind, chunk, layers
):
    """Fallback for families whose blocks depend on their index: one trace per layer.

    The full forward runs with layer L's resid_pre replaced wholesale by the cached
    value, so XLA drops layers < L (the prefix is still reused).
    """
    out = []
    for i, layer in enumerate(layers):
        site = sites_mod.act_name(kind, layer)
        rp = sites_mod.act_name("resid_pre", layer)

        def element(e, i=i, site=site, rp=rp):
            pos, head = e
            patch = _patch_iv(src[i], pos, head)
            hooks = (
                {rp: (Patch(resid_pre[i]), patch)}
                if site == rp
                else {rp: Patch(resid_pre[i]), site: patch}
            )
            return metric(run(model, target, hooks, attention_mask=mask).logits)

        out.append(jax.lax.map(element, (pos_idx, head_idx), batch_size=chunk))
    return jnp.stack(out)


# ------------------------------------------------------------------------ path patching


def path_patch(
    model: Model,
    clean,
    corrupted,
    metric: Callable[[jax.Array], jax.Array],
    receivers: Sequence[tuple[str, Sequence[int] | None]],
    *,
    freeze_mlps: bool = False,
    attention_mask=None,
    chunk_size: int | None = None,
    memory_mb: float = 512.0,
) -> PatchResult:
    """Path patching from every sender head to `receivers`; grid `[layer, head]`.

    For each sender head (l, h): (1) run the clean prompt with head (l, h)'s `z` taken
    from the corrupted run and every other head's `z` frozen to its clean value (and the
    MLP outputs too if `freeze_mlps`), recording the receiver sites; (2) run the clean
    prompt with only the receiver sites patched to those values; the metric of (2) fills
    the grid. Noising direction, as Wang et al. (2022).

    Args:
      receivers: (site name, heads or None) pairs, e.g.
        `[("blocks.3.attn.hook_q", [0, 2])]` or `[("blocks.5.hook_resid_post", None)]`.
    """
    clean, corrupted = _check_pair(clean, corrupted)
    if not receivers:
        raise InputError("path_patch needs at least one receiver site")
    n, valid = model.config.n_layers, model.sites
    sites_mod.check([r[0] for r in receivers], valid, what="receiver site")
    z_names = [sites_mod.act_name("z", l) for l in range(n)]
    mlp_names = [sites_mod.act_name("mlp_out", l) for l in range(n)] if freeze_mlps else []
    c_out = run(model, clean, capture=z_names + mlp_names, attention_mask=attention_mask)
    k_out = run(model, corrupted, capture=z_names, attention_mask=attention_mask)
    z_clean = jnp.stack([c_out.cache[x] for x in z_names])
    z_corr = jnp.stack([k_out.cache[x] for x in z_names])
    mlp_clean = tuple(c_out.cache[x] for x in mlp_names)
    n_heads = z_clean.shape[3]
    senders = jnp.asarray(np.arange(n * n_heads), jnp.int32)
    chunk = _chunk(model, clean.shape, int(senders.shape[0]), chunk_size, memory_mb / 2)
    arrays, static = split_static(metric)
    recv = tuple((name, None if h is None else tuple(int(x) for x in h)) for name, h in receivers)
    grid = _path_sweep(
        model,
        clean,
        attention_mask,
        z_clean,
        z_corr,
        mlp_clean,
        senders,
        arrays,
        static=static,
        receivers=recv,
        chunk=chunk,
    )
    return PatchResult(
        grid.reshape(n, n_heads),
        ("layer", "head"),
        metric(c_out.logits),
        metric(k_out.logits),
        np.arange(n),
    )


@functools.partial(jax.jit, static_argnames=("static", "receivers", "chunk"))
def _path_sweep(
    model, clean, mask, z_clean, z_corr, mlp_clean, senders, arrays, *, static, receivers, chunk
):
    metric = join_static(arrays, static)
    n, n_heads = z_clean.shape[0], z_clean.shape[3]
    recv_names = tuple(r[0] for r in receivers)

    def element(s):
        sel = (jnp.arange(n * n_heads) == s).reshape(n, 1, 1, n_heads, 1)
        z = jnp.where(sel, z_corr, z_clean)
        hooks = {sites_mod.act_name("z", l): Patch(z[l]) for l in range(n)}
        for l, m in enumerate(mlp_clean):
            hooks[sites_mod.act_name("mlp_out", l)] = Patch(m)
        for name in recv_names:  # receivers read the frozen run, not their own patch
            hooks.pop(name, None)
        cache = run(model, clean, hooks, capture=recv_names, attention_mask=mask).cache
        hooks2 = {name: Patch(cache[name], heads=_as_index(h)) for name, h in receivers}
        return metric(run(model, clean, hooks2, attention_mask=mask).logits)

    return jax.lax.map(element, senders, batch_size=chunk)
