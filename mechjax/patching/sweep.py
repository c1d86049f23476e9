"""`patch_sweep`: activation patching at every layer x position (x head), compiled.

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
- elements (positions, heads) are chunked to a memory budget; the reference runs are
  one compiled program and the chunks another, called once per chunk from the host
  with equal shapes (the last chunk padded), so nothing recompiles per chunk and a
  progress bar can follow the chunks, the compile time shown apart;
- positions are absolute (the same index in every row) or named, one index per row
  (`positions=batch.positions`: column "S2" patches each row at its own S2), the
  per-row indices being array leaves of the patch, so other indices (a new batch of the
  same shape) reuse the compiled program;
- cells that cannot change the run are not run (`skip_unchanged`): in a causal model the
  positions before the first token where clean and corrupted differ hold the same
  activations in both runs, so those cells are the target run's metric. A per-head
  sweep of layers x positions x heads patched forwards, each about one block-suffix
  forward like a residual-stream cell, is otherwise the same work per cell.

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

import functools
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mechjax import metrics as metrics_mod
from mechjax import sites as sites_mod
from mechjax.errors import InputError
from mechjax.interventions import Intervention, Patch
from mechjax.model import Model, run
from mechjax.patching.blocks import (
    _block,
    _check_pair,
    _indexable_blocks,
    _layer_invariant,
    _stack_blocks,
    metric_of_final,
    run_from_layer,
)
from mechjax.patching.static import join_static, split_static
from mechjax.progress import progress_bar


class PatchResult(NamedTuple):
    """A patching grid and its reference points.

    grid: metric after each patch, axes named by `axes` (`layer`, `pos`, `head`).
    clean_metric / corrupted_metric: the metric of the unpatched clean / corrupted runs.
    layers: the grid's `layer` axis.
    positions: the grid's `pos` axis when not every position: `[pos]` absolute positions,
      or `[pos, batch]` for a sweep over named positions (the position each row patched).
    position_labels: the names of the `pos` columns of a named-position sweep (`"S2"`).
    """

    grid: jax.Array
    axes: tuple
    clean_metric: jax.Array
    corrupted_metric: jax.Array
    layers: np.ndarray
    positions: np.ndarray | None = None
    position_labels: tuple | None = None

    def normalized(self) -> jax.Array:
        """(grid - corrupted) / (clean - corrupted): 0 = corrupted run, 1 = clean run."""
        return (self.grid - self.corrupted_metric) / (self.clean_metric - self.corrupted_metric)

    def __repr__(self) -> str:
        # the grid itself can hold thousands of cells: show its shape and range only
        g = np.asarray(self.grid)
        dims = ", ".join(f"{a}={n}" for a, n in zip(self.axes, g.shape))
        span = f"[{np.nanmin(g):.4g}, {np.nanmax(g):.4g}]" if g.size else "[]"
        named = f", positions={list(self.position_labels)}" if self.position_labels else ""
        return (
            f"PatchResult(grid[{dims}] in {span}, clean={float(self.clean_metric):.4g}, "
            f"corrupted={float(self.corrupted_metric):.4g}{named})"
        )


def _site_kind(site: str) -> str:
    sites_mod.act_name(site, 0)  # raises SiteError with the valid kinds
    return site


def _elements(n_pos: int, n_heads: int | None, per_position: bool, positions=None):
    """Index arrays (positions, heads [E, 1] or None) and the grid shape.

    `positions`: `[k]` absolute positions (default every position), or `[k, batch]` per-row
    positions (named positions); the element positions are then `[E, k']` or
    `[E, batch, k']` (k' = 1 per position, k' = k when all are patched at once).
    """
    pos = np.arange(n_pos) if positions is None else np.asarray(positions, np.int64)
    k = pos.shape[0]
    every = np.moveaxis(pos, 0, -1)[None]  # [1, (batch,) k]: all columns at once
    if n_heads is None:
        if per_position:
            return pos[..., None], None, (k,), ("pos",)
        return every, None, (), ()
    if per_position:
        heads = np.tile(np.arange(n_heads), k)[:, None]  # position-major, like the grid
        return np.repeat(pos, n_heads, axis=0)[..., None], heads, (k, n_heads), ("pos", "head")
    tiled = np.tile(every, (n_heads,) + (1,) * (every.ndim - 1))
    return tiled, np.arange(n_heads)[:, None], (n_heads,), ("head",)


@struct.dataclass
class _RowPatch(Intervention):
    """Replace the activation by `value` (its full shape) at positions chosen per batch
    row (`positions`: int `[batch, k]`) and optionally at `heads` (`[h]`): the patch of
    one element of a named-position sweep."""

    value: jax.Array
    positions: jax.Array
    heads: jax.Array | None = None

    def apply(self, x, site):
        pos_axis, head_axis = sites_mod.axes(site)
        n = x.shape[pos_axis]
        idx = jnp.where(self.positions < 0, self.positions + n, self.positions)
        rows = (jnp.arange(n)[None, :, None] == idx[:, None, :]).any(-1)  # [batch, n]
        mask = rows.reshape(rows.shape[:1] + (1,) * (pos_axis - 1) + (n,))
        mask = mask.reshape(mask.shape + (1,) * (x.ndim - pos_axis - 1))
        if self.heads is not None:
            assert head_axis is not None  # heads= is only built for sites with a head axis
            m = x.shape[head_axis]
            sel = (jnp.arange(m)[:, None] == self.heads[None, :]).any(-1)
            mask = mask & sel.reshape((m,) + (1,) * (x.ndim - head_axis - 1))
        return jnp.where(mask, jnp.broadcast_to(self.value, x.shape).astype(x.dtype), x)


def _named_positions(positions, batch_positions, n_rows: int, n_pos: int):
    """(`[k, batch]` per-row positions, names) for a named-position sweep, else None.

    `positions` is a dict name -> int `[batch]` (e.g. `TaskBatch.positions`), or a list
    of names looked up in `batch_positions`.
    """
    if isinstance(positions, dict):
        table, names = positions, list(positions)
    elif positions is not None and any(isinstance(x, str) for x in positions):
        if batch_positions is None:
            raise InputError(
                f"positions {list(positions)!r} are names: pass batch_positions= (e.g. "
                "batch.positions, name -> int [batch]) to say where each row has them"
            )
        names = list(positions)
        missing = [x for x in names if x not in batch_positions]
        if missing:
            raise InputError(
                f"positions {missing!r} not in batch_positions (names: {list(batch_positions)})"
            )
        table = batch_positions
    else:
        return None
    if not names:
        raise InputError("empty sweep: positions is empty")
    cols = []
    for name in names:
        col = np.asarray(table[name])
        if col.shape != (n_rows,) or not np.issubdtype(col.dtype, np.integer):
            raise InputError(
                f"position {name!r} must be int [batch] = ({n_rows},), one position per row, "
                f"got {col.dtype} {col.shape}"
            )
        if col.min() < -n_pos or col.max() >= n_pos:
            raise InputError(
                f"position {name!r} must be in [-{n_pos}, {n_pos}) for prompts of {n_pos} "
                f"tokens, got {col.tolist()}"
            )
        cols.append(col.astype(np.int64) % n_pos)
    return np.stack(cols), tuple(str(x) for x in names)


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
    layers: Any = None,  # a sequence of layer indices (checked below)
    positions: Any = None,  # ints, names, or a dict name -> [batch] (checked below)
    batch_positions: dict | None = None,
    per_position: bool = True,
    mode: str = "denoise",
    attention_mask=None,
    chunk_size: int | None = None,
    memory_mb: float = 512.0,
    strategy: str = "wave",
    force_unrolled: bool = False,
    skip_unchanged: bool = True,
    progress: bool = True,
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
      positions: absolute positions to patch (default all; negative counts from the
        end), the same in every row; the grid's `pos` axis then follows this order
        (`PatchResult.positions`). A new set of the same size reuses the compiled
        program. Or named positions, one per row: a dict name -> int `[batch]`
        (`positions=batch.positions`), or a list of names with `batch_positions=`; column
        "S2" then patches position `batch_positions["S2"][row]` in each row, so rows whose
        templates put S2 at different indices are still averaged over S2
        (`PatchResult.position_labels` names the columns).
      batch_positions: name -> int `[batch]`, where `positions` lists names.
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
      skip_unchanged: do not run the patches that cannot change anything: in a causal
        model, positions before the first token where clean and corrupted differ (in
        every row) hold the same activations in both runs, so their cells are the
        target run's metric (IOI's s2_io_flip pairs differ from S2 on, so about 2/3
        of the positions are skipped). False runs every cell.
      progress: a progress bar over chunks (on a terminal, after 2 s), with the compile
        time shown apart.

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
    named = _named_positions(positions, batch_positions, clean.shape[0], P)
    labels = None
    if named is not None:
        positions, labels = named
    elif positions is not None:
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
    layers_t = tuple(int(x) for x in layers)
    n_elems = len(pos_idx)
    active = np.arange(n_elems)
    if skip_unchanged:
        active = np.flatnonzero(_changed(model, clean, corrupted, pos_idx))
        active = active if active.size else np.arange(1)  # one element: the reference runs
    chunk = _chunk(
        model,
        clean.shape,
        active.size,
        chunk_size,
        memory_mb,
        streams=len(layers) if strategy == "wave" else 1,
        logit_rows=1 if narrowable else None,
    )
    bar = _bar(progress, f"{site} sweep", -(-active.size // chunk))
    t0 = time.perf_counter()
    resid_pre, src, m_t, m_s = jax.block_until_ready(
        _references(
            model,
            target,
            source,
            attention_mask,
            arrays,
            static=static,
            kind=site,
            layers=layers_t,
        )
    )
    refs_s = time.perf_counter() - t0
    computed = _run_chunks(
        bar,
        refs_s,
        functools.partial(
            _sweep_chunk,
            model,
            target,
            attention_mask,
            resid_pre,
            src,
            static=static,
            kind=site,
            layers=layers_t,
            strategy=strategy,
        ),
        pos_idx[active],
        None if head_idx is None else head_idx[active],
        arrays,
        chunk,
    )
    if active.size == n_elems:
        grid = computed
    else:  # the skipped elements patch a value equal to the target's own: its metric
        full = jnp.broadcast_to(m_t.astype(computed.dtype), (len(layers), n_elems))
        grid = full.at[:, jnp.asarray(active)].set(computed)
    grid = grid.reshape((len(layers),) + cell)
    clean_m, corr_m = (m_s, m_t) if mode == "denoise" else (m_t, m_s)
    return PatchResult(grid, ("layer",) + cell_axes, clean_m, corr_m, layers, positions, labels)


def _changed(model: Model, clean, corrupted, pos_idx) -> np.ndarray:
    """bool [E]: elements whose patch can change the run (host-side, from the tokens).

    In a causal model every activation at position p depends on tokens 0..p only, so at
    a position before the first token where a row's clean and corrupted prompts differ
    the two runs hold the same values and patching one into the other changes nothing.
    Encoders (bidirectional attention) keep every element.
    """
    from mechjax.model import ENCODER_FAMILIES

    pos = np.asarray(pos_idx)
    if model.family.name in ENCODER_FAMILIES:
        return np.ones(pos.shape[0], bool)
    diff = np.asarray(clean) != np.asarray(corrupted)
    first = np.where(diff.any(1), diff.argmax(1), diff.shape[1])  # [batch]
    if pos.ndim == 2:  # [E, k], the same in every row: changed if any row differs by then
        return pos.max(1) >= first.min()
    return (pos >= first[None, :, None]).any((1, 2))  # [E, batch, k]


def _bar(progress: bool, desc: str, total: int):
    """A bar over chunks: shown after 2 s, and only on a terminal."""
    return progress_bar(progress and sys.stderr.isatty(), total, desc, "chunk", delay=2.0)


def _run_chunks(bar, refs_s, fn, pos_idx, head_idx, arrays, chunk):
    """Run `fn(pos, head, arrays)` (one compiled program) on each chunk of elements.

    The elements are padded to whole chunks so every call has the same shapes and
    nothing recompiles per chunk; the host loop lets the bar advance per chunk. The first
    call includes the compile, reported on the bar apart from the run time.
    """
    n = pos_idx.shape[0]
    c = min(chunk, n)
    n_chunks = -(-n // c)

    def pad(x):
        if x is None:
            return None
        x = np.concatenate([x, np.repeat(x[-1:], n_chunks * c - n, axis=0)])
        return jnp.asarray(x, jnp.int32)

    pos, head = pad(pos_idx), pad(head_idx)
    assert pos is not None
    outs, times = [], []
    for i in range(n_chunks):
        t = time.perf_counter()
        sl = slice(i * c, (i + 1) * c)
        out = fn(pos[sl], None if head is None else head[sl], arrays)
        outs.append(jax.block_until_ready(out) if not bar.disable else out)
        times.append(time.perf_counter() - t)
        if i == 1 or n_chunks == 1:
            run = times[-1] if n_chunks > 1 else 0.0
            bar.set_postfix_str(f"compile+references {refs_s + times[0] - run:.1f} s", False)
        bar.update(1)
    bar.close()
    grid = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)
    return grid[:, :n]


@functools.partial(jax.jit, static_argnames=("static", "kind", "layers"))
def _references(model, target, source, mask, arrays, *, static, kind, layers):
    """Both reference runs as one batch: the target's resid_pre and the source's `kind`
    at each swept layer, and both runs' metrics."""
    metric = join_static(arrays, static)
    names = [sites_mod.act_name(kind, l) for l in layers]
    resid_names = [sites_mod.act_name("resid_pre", l) for l in layers]
    b = target.shape[0]
    both = run(
        model,
        jnp.concatenate([target, source]),
        capture=tuple(dict.fromkeys(resid_names + names)),
        attention_mask=None if mask is None else jnp.concatenate([mask, mask]),
    )
    resid_pre = jnp.stack([both.cache[x][:b] for x in resid_names])
    src = jnp.stack([both.cache[x][b:] for x in names])
    return resid_pre, src, metric(both.logits[:b]), metric(both.logits[b:])


@functools.partial(jax.jit, static_argnames=("static", "kind", "layers", "strategy"))
def _sweep_chunk(
    model,
    target,
    mask,
    resid_pre,
    src,
    pos_idx,
    head_idx,
    arrays,
    *,
    static,
    kind,
    layers,
    strategy,
):
    """The metric after each patch of one chunk of elements: `[layers, chunk]`."""
    metric = join_static(arrays, static)
    c = pos_idx.shape[0]
    if strategy == "unrolled":
        return _sweep_unrolled(
            model, target, mask, resid_pre, src, pos_idx, head_idx, metric, kind, c, layers
        )
    if strategy == "scan":
        lay = jnp.asarray(layers, jnp.int32)
        return _sweep_scan(
            model, target, mask, resid_pre, src, lay, pos_idx, head_idx, metric, kind, c
        )
    return _sweep_wave(
        model, target, mask, resid_pre, src, pos_idx, head_idx, metric, kind, c, layers
    )


def _patch_iv(value, pos, head):
    """The patch of one sweep element: `pos` is `[k]`, or `[batch, k]` per row."""
    return Patch(value, pos, head) if pos.ndim == 1 else _RowPatch(value, pos, head)


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
        streams: Any = None  # [started runs, c, batch, pos, d_model]
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
