"""Streamed activation harvesting: many sequences through a model, activations to the host.

Probes, SAEs and neuron studies all need the same loop: run a model over a corpus in
batches, keep a few sites, move them off the device. `harvest` does it with one compiled
program for every batch (the last batch is padded to the batch size and the padding
dropped, so no shape is new), one device-to-host transfer per batch, and only the
requested sites and positions leaving the device.

`TopActivations` keeps the k largest activations of a set of neurons, with where they
happened (sequence, position), in memory O(n_neurons * k) whatever the corpus size;
`top_activating` streams a corpus through it, reducing each batch to its own top k on the
device first (`jax.lax.top_k`), so only [n_neurons, k] values cross to the host.
`context` renders the tokens around one of those positions with the token highlighted,
the dataset-example view of neuron studies (e.g. Bills et al. 2023, "Language models can
explain neurons in language models").
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import sites as sites_mod
from mechjax.errors import InputError, SiteError
from mechjax.model import Model, capture_names, run
from mechjax.progress import CompileClock, exclude_compile, progress_bar, show_progress
from mechjax.typing import Array

__all__ = [
    "TopActivations",
    "TopK",
    "block_site",
    "context",
    "harvest",
    "site_width",
    "top_activating",
]

# Times each compiled step was traced: tests read it to prove one program serves a corpus.
TRACE_COUNT = {"harvest": 0, "top": 0}


# ---------------------------------------------------------------------- inputs


def _host_tokens(tokens: Any, d_vocab: int | None = None) -> np.ndarray:
    """int32 [n, pos] on the host; ids range-checked there (inside the compiled step they
    are traced and could not be)."""
    arr = np.asarray(tokens)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(
            f"tokens must be an int [n, pos] array, got shape {arr.shape} dtype {arr.dtype}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"tokens must have at least one sequence and position, got {arr.shape}")
    if d_vocab is not None and (arr.min() < 0 or arr.max() >= d_vocab):
        bad = int(arr.min() if arr.min() < 0 else arr.max())
        raise InputError(f"token id {bad} is outside the vocabulary [0, {d_vocab})")
    return arr.astype(np.int32, copy=False)


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _pad(x: np.ndarray, size: int, value: Any) -> np.ndarray:
    """`x` with its first axis padded to `size` rows of `value` (the last, short batch)."""
    if x.shape[0] == size:
        return x
    fill = np.full((size - x.shape[0],) + x.shape[1:], value, x.dtype)
    return np.concatenate([x, fill])


def _positions(positions: Any, n: int, n_pos: int) -> tuple[str, np.ndarray | None]:
    """("all", None), ("slice", index [k]) or ("index", index [n]), checked on the host."""
    if positions is None:
        return "all", None
    if isinstance(positions, slice):
        idx = np.arange(n_pos)[positions]
        if idx.size == 0:
            raise InputError(f"positions {positions} selects nothing of {n_pos} positions")
        return "slice", idx.astype(np.int32)
    idx = np.asarray(positions)
    if idx.ndim == 0:
        idx = np.full(n, idx)
    shape = tuple(idx.shape)
    several = len(shape) == 2 and shape[0] == n and shape[1] >= 1
    if not (idx.shape == (n,) or several) or not np.issubdtype(idx.dtype, np.integer):
        raise InputError(
            f"positions must be None, a slice, one int position per sequence (int [{n}]) or "
            f"k per sequence (int [{n}, k]), got shape {idx.shape} dtype {idx.dtype}"
        )
    if idx.min() < -n_pos or idx.max() >= n_pos:
        bad = int(idx.min() if idx.min() < -n_pos else idx.max())
        raise InputError(f"position {bad} is outside the {n_pos} positions [-{n_pos}, {n_pos})")
    return ("several" if several else "index"), (idx % n_pos).astype(np.int32)


def _mask(attention_mask: Any, shape: tuple[int, int]) -> np.ndarray | None:
    if attention_mask is None:
        return None
    m = np.asarray(attention_mask)
    if m.shape != shape:
        raise InputError(f"attention_mask must have the tokens' shape {shape}, got {m.shape}")
    return m.astype(bool)


# ---------------------------------------------------------------------- harvest


def _select(x: Array, site: str, mode: str, idx: Array | None) -> Array:
    """Positions `idx` of the activation `x` along the site's position axis."""
    axis = sites_mod.axes(site)[0]
    if idx is None:
        return x
    if mode == "slice":
        return jnp.take(x, idx, axis=axis)
    if mode == "index":
        shape = [1] * x.ndim
        shape[0] = x.shape[0]
        picked = jnp.take_along_axis(x, idx.reshape(shape), axis=axis)
        return jnp.squeeze(picked, axis)
    if mode == "several":  # idx [batch, k]: k positions per row, on the position axis
        shape = [1] * x.ndim
        shape[0], shape[axis] = x.shape[0], idx.shape[1]
        return jnp.take_along_axis(x, idx.reshape(shape), axis=axis)
    return x


def _harvest_step(
    model: Model, tokens: Array, mask: Array | None, idx: Array | None, capture: tuple, mode: str
) -> dict[str, Array]:
    TRACE_COUNT["harvest"] += 1
    cache = run(model, tokens, capture=capture, attention_mask=mask).cache
    return {s: _select(cache[s], s, mode, idx) for s in capture}


_harvest_jit = jax.jit(_harvest_step, static_argnames=("capture", "mode"))


def harvest(
    model: Model,
    tokens: Any,
    sites: str | Sequence[str],
    *,
    batch_size: int = 8,
    positions: Any = None,
    attention_mask: Any = None,
    progress: bool | None = None,
) -> dict[str, np.ndarray]:
    """Activations of `sites` over every sequence of `tokens`, stacked on the host.

    Args:
      model: the model to run.
      tokens: int [n, pos] token ids (numpy or JAX), run `batch_size` rows at a time.
      sites: one site name or several (full names, or TransformerLens tuples).
      positions: None for all positions ([n, pos, ...] per site; attention patterns keep
        their [n, heads, q, k] layout), a slice of positions ([n, k, ...]), one int
        position per sequence (int [n], negative from the end) giving [n, ...]: e.g. each
        sequence's last real token, or k positions per sequence (int [n, k]) giving
        [n, k, ...] (pad short rows with any valid position and drop those entries).
        Selected on the device, before the transfer.
      attention_mask: optional bool [n, pos], True for real tokens.
      progress: a progress bar over batches (None: on a terminal when there are several).

    Returns: site name -> numpy array, first axis the n sequences, in `tokens` order.
    """
    host = _host_tokens(tokens, model.config.d_vocab)
    n, n_pos = host.shape
    capture = capture_names(model, sites)
    if not capture:
        raise SiteError("harvest needs at least one site (see model.sites)")
    mode, idx = _positions(positions, n, n_pos)
    mask = _mask(attention_mask, (n, n_pos))
    size = min(batch_size, n) if batch_size >= 1 else batch_size
    spans = _batches(n, size)
    out: dict[str, np.ndarray] = {}
    bar = progress_bar(show_progress(progress, len(spans) > 1), len(spans), "harvest", "batch")
    with bar, CompileClock() as clock:
        for start, stop in spans:
            b_tok = jnp.asarray(_pad(host[start:stop], size, 0))
            b_mask = None if mask is None else jnp.asarray(_pad(mask[start:stop], size, True))
            b_idx = None
            if idx is not None:
                b_idx = jnp.asarray(idx if mode == "slice" else _pad(idx[start:stop], size, 0))
            acts = jax.device_get(_harvest_jit(model, b_tok, b_mask, b_idx, capture, mode))
            for s in capture:
                a = np.asarray(acts[s])
                if s not in out:
                    out[s] = np.empty((n,) + a.shape[1:], a.dtype)
                out[s][start:stop] = a[: stop - start]
            exclude_compile(bar, clock.seconds)
            clock.seconds = 0.0
            bar.update(1)
    return out


# ---------------------------------------------------------------------- top activations


class TopK(NamedTuple):
    """The k largest activations of each neuron, sorted descending.

    `values`, `seq`, `pos` are [n_neurons, k]: row i belongs to `neurons[i]` (layer,
    index); `seq[i, j]` is the sequence (row of the tokens) and `pos[i, j]` the position of
    the j-th largest activation.
    """

    values: np.ndarray
    seq: np.ndarray
    pos: np.ndarray
    neurons: tuple[tuple[int, int], ...]


class TopActivations:
    """Bounded-memory tracker of each neuron's k largest activations and their locations.

        top = TopActivations([(3, 17), (3, 400)], k=20)
        for batch in ...:
            top.update(acts[..., [17, 400]], seq_ids)   # [batch, pos, n_neurons]
        top.result()                                     # TopK, sorted descending

    Memory is three [k, n_neurons] arrays; each update keeps the k largest of the current
    k and the new candidates (`np.argpartition`, linear in the batch). Ties are ordered by
    sequence, then position, in `result`; which of tied values at the k-th place survives
    is not specified.
    """

    def __init__(self, neurons: Sequence[tuple[int, int]], k: int) -> None:
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        self.neurons = tuple((int(l), int(i)) for l, i in neurons)
        if not self.neurons:
            raise InputError("TopActivations needs at least one neuron")
        self.k = k
        n = len(self.neurons)
        self.values = np.full((k, n), -np.inf, np.float32)
        self.seq = np.full((k, n), -1, np.int64)
        self.pos = np.full((k, n), -1, np.int64)
        self.seen = 0

    def merge(self, values: np.ndarray, seq: np.ndarray, pos: np.ndarray) -> None:
        """Add candidates: [c, n_neurons] values with their sequence and position ids."""
        n = len(self.neurons)
        if values.ndim != 2 or values.shape[1] != n or seq.shape != values.shape:
            raise InputError(
                f"candidates must be [c, {n}] values, sequences and positions; got "
                f"{values.shape}, {seq.shape}, {pos.shape}"
            )
        vals = np.concatenate([self.values, values.astype(np.float32)])
        seqs = np.concatenate([self.seq, seq.astype(np.int64)])
        poss = np.concatenate([self.pos, pos.astype(np.int64)])
        keep = np.argpartition(-vals, self.k - 1, axis=0)[: self.k]
        self.values = np.take_along_axis(vals, keep, axis=0)
        self.seq = np.take_along_axis(seqs, keep, axis=0)
        self.pos = np.take_along_axis(poss, keep, axis=0)
        self.seen += int(np.isfinite(values[:, 0]).sum())

    def update(self, acts: np.ndarray, seq_ids: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add a batch: acts [batch, pos, n_neurons] (columns in `neurons` order), the
        batch rows' sequence ids [batch], and optionally a bool [batch, pos] of positions
        to count (padding: False)."""
        acts = np.asarray(acts, np.float32)
        b, p = acts.shape[:2]
        if acts.ndim != 3 or np.shape(seq_ids) != (b,):
            raise InputError(
                f"update expects acts [batch, pos, {len(self.neurons)}] and seq_ids [batch]; "
                f"got {acts.shape} and {np.shape(seq_ids)}"
            )
        if mask is not None:
            acts = np.where(np.asarray(mask, bool)[..., None], acts, -np.inf)
        seq = np.broadcast_to(np.asarray(seq_ids, np.int64)[:, None, None], acts.shape)
        pos = np.broadcast_to(np.arange(p, dtype=np.int64)[None, :, None], acts.shape)
        n = acts.shape[2]
        self.merge(acts.reshape(-1, n), seq.reshape(-1, n), pos.reshape(-1, n))

    def result(self) -> TopK:
        """Each neuron's top activations, sorted descending (ties by sequence, position);
        k is cut to the number of activations seen when fewer were."""
        k = min(self.k, self.seen)
        rows = [
            np.lexsort((self.pos[:, j], self.seq[:, j], -self.values[:, j]))[:k]
            for j in range(len(self.neurons))
        ]
        order = np.stack(rows, axis=1)
        pick = lambda a: np.take_along_axis(a, order, axis=0).T.copy()
        return TopK(pick(self.values), pick(self.seq), pick(self.pos), self.neurons)


def block_site(model: Model, layer: int, site: str) -> str:
    """The full name of `site` (a kind such as `mlp.hook_post`, or a full name) at `layer`;
    InputError for a layer out of range, SiteError for a site the model lacks."""
    n_layers = model.config.n_layers
    if not 0 <= layer < n_layers:
        raise InputError(f"layer {layer} is out of range: valid 0..{n_layers - 1}")
    name = site if site.startswith("blocks.") else f"blocks.{layer}.{site}"
    if name not in model.sites:
        have = sorted(
            {
                sites_mod.parse(s).component or ""
                for s in model.sites
                if s.startswith(f"blocks.{layer}.")
            }
        )
        raise SiteError(
            f"this model has no site {name!r} (components of layer {layer}: "
            f"{', '.join(c for c in have if c) or 'none'}; see model.sites)"
        )
    return name


def site_width(model: Model, name: str) -> int:
    """Units of a [batch, pos, units] site (the MLP's d_mlp, d_model, ...), from shapes
    alone. Raises SiteError for a site of another layout (per-head, patterns)."""
    info = sites_mod.parse(name)
    if info.component == "mlp" and info.hook in ("hook_pre", "hook_pre_linear", "hook_post"):
        return int(model.config.d_mlp)
    shape = jax.eval_shape(lambda m: run(m, jnp.zeros((1, 1), jnp.int32), capture=(name,)), model)
    out = shape.cache[name].shape
    if len(out) != 3:
        raise SiteError(f"site {name!r} has shape {out}; neurons need a [batch, pos, units] site")
    return int(out[2])


def _top_step(
    model: Model, tokens: Array, valid: Array, cols: Array, site: str, k: int
) -> tuple[Array, Array]:
    """Per neuron, this batch's k largest activations and their flat (row * pos + p) index."""
    TRACE_COUNT["top"] += 1
    acts = run(model, tokens, capture=(site,)).cache[site]
    acts = jnp.take(acts, cols, axis=2).astype(jnp.float32)
    acts = jnp.where(valid[:, None, None], acts, -jnp.inf)
    flat = acts.reshape(-1, cols.shape[0]).T  # [n_neurons, batch * pos]
    values, index = jax.lax.top_k(flat, k)
    return values, index


_top_jit = jax.jit(_top_step, static_argnames=("site", "k"))


def top_activating(
    model: Model,
    tokens: Any,
    layer: int,
    neurons: int | Sequence[int],
    *,
    k: int = 20,
    site: str = "mlp.hook_post",
    batch_size: int = 8,
    progress: bool | None = None,
) -> TopK:
    """The `k` largest activations of `neurons` of `site` at `layer` over `tokens`.

    One compiled program for every batch; each batch is reduced to its own top k per
    neuron on the device, so only [n_neurons, k] values reach the host, and memory is
    O(n_neurons * k) whatever the corpus. `site` is the kind within the block
    (`mlp.hook_post`, `mlp.hook_pre`, `hook_resid_post`, ...) or a full site name.
    Returns a `TopK` whose row i is neuron `neurons[i]`.
    """
    host = _host_tokens(tokens, model.config.d_vocab)
    n, n_pos = host.shape
    name = block_site(model, layer, site)
    ids = [int(neurons)] if isinstance(neurons, (int, np.integer)) else [int(i) for i in neurons]
    width = site_width(model, name)
    bad = [i for i in ids if not 0 <= i < width]
    if bad or not ids:
        what = f"neuron {bad[0]} is out of range" if bad else "no neuron given"
        raise InputError(f"{what} for {name}: valid 0..{width - 1}")
    size = min(batch_size, n) if batch_size >= 1 else batch_size
    spans = _batches(n, size)
    top = TopActivations([(layer, i) for i in ids], k)
    kb = min(k, size * n_pos)
    cols = jnp.asarray(ids, jnp.int32)
    bar = progress_bar(show_progress(progress, len(spans) > 1), len(spans), "top", "batch")
    with bar, CompileClock() as clock:
        for start, stop in spans:
            valid = np.arange(size) < stop - start
            b_tok = jnp.asarray(_pad(host[start:stop], size, 0))
            vals, flat = jax.device_get(_top_jit(model, b_tok, jnp.asarray(valid), cols, name, kb))
            vals, flat = np.asarray(vals).T, np.asarray(flat).T  # [kb, n_neurons]
            top.merge(vals, start + flat // n_pos, flat % n_pos)
            exclude_compile(bar, clock.seconds)
            clock.seconds = 0.0
            bar.update(1)
    return top.result()


# ---------------------------------------------------------------------- rendering


def _show(piece: str) -> str:
    return piece.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def context(
    model: Model,
    tokens: Any,
    seq: int,
    pos: int,
    *,
    before: int = 12,
    after: int = 4,
    ansi: bool | None = None,
    stream: Any = None,
) -> str:
    """The tokens of sequence `seq` around `pos` on one line, the token at `pos` marked.

    `before` tokens before and `after` after (fewer at the ends); newlines and tabs shown
    as `\\n`, `\\t`. The token is `[[token]]`, or ANSI bold when `ansi` (None: when
    `stream`, default stdout, is a terminal). Token strings come from
    `model.to_str_tokens`; a model without a tokenizer shows ids as `#17`.
    """
    host = _host_tokens(tokens)
    if not 0 <= seq < host.shape[0] or not 0 <= pos < host.shape[1]:
        raise InputError(f"(seq {seq}, pos {pos}) is outside the tokens of shape {host.shape}")
    lo, hi = max(0, pos - before), min(host.shape[1], pos + after + 1)
    ids = host[seq, lo:hi]
    if model.tokenizer is None:
        pieces, sep = [f"#{int(t)}" for t in ids], " "
    else:
        pieces, sep = list(model.to_str_tokens(ids)), ""
    if ansi is None:
        target = sys.stdout if stream is None else stream
        ansi = bool(getattr(target, "isatty", lambda: False)())
    j = pos - lo
    mark = _show(pieces[j])
    pieces[j] = f"\x1b[1m{mark}\x1b[0m" if ansi else f"[[{mark}]]"
    return sep.join(p if i == j else _show(p) for i, p in enumerate(pieces))
