"""Circuit evaluation: the clean run with every edge outside a circuit ablated (EAP-IG's
`evaluate_graph`).

An edge u -> v outside the circuit carries u's *ablated* output into v's input instead of
its value in this run: the corrupted run's output (`ablation="corrupted"`, MIB's
patching), u's mean output over the clean prompts' real positions (`"mean"`) or zero
(`"zero"`). So each destination input gets sum over its off edges of a_u - z_u(this run).

Only edges of `graph_of(model)` carry ablated values (in a parallel block a layer's
heads run before its MLP reads the block input, without an edge to it). With a
post-attention norm the layer's head results are mixed before the norm rather than
added after it, so a circuit's value is the patched model's, not an additive estimate.

Neuron-level circuits (MIB's `neuron` level) keep some of each source's output
dimensions: `neurons [n_src, d_model]` (True = in the circuit). As in EAP-IG, an edge
whose source is only partly kept carries the ablated value on the dimensions not kept.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import sites as sites_mod
from mechjax.circuits.graph import (
    _in_sites,
    _out_sites,
    _prepare,
    _stack_nodes,
    graph_of,
    post_attn_norm,
)
from mechjax.errors import InputError
from mechjax.model import Model, run
from mechjax.patching import join_static, split_static
from mechjax.patching.blocks import metric_of_final

__all__ = ["ABLATIONS", "ablated_outputs", "evaluate_graph"]

ABLATIONS = ("corrupted", "mean", "zero")


class _GraphHook:
    """Runs the clean input with edges outside the circuit carrying ablated values.

    Each destination input gets the sum over its off edges u of a_u - z_u(this run), as
    EAP-IG's `evaluate_graph` does. With a post-attention norm `post` (Gemma 3), a
    layer's heads are not additive: that layer's term is instead post(sum of its head
    results, each ablated where its edge to this input is off) - post(sum of this run's
    head results), so ablating every out-edge of a head equals patching its result.
    """

    def __init__(self, model, ablated, off, keep, post):
        n_layers = model.config.n_layers
        self.outs, self.ins = _out_sites(n_layers), _in_sites(n_layers)
        self.h = model.config.n_heads
        self.model, self.post = model, post
        # [b, p, n_src, d] (or broadcastable), [n_src, n_dst], [n_src, d] or None
        self.ablated, self.off, self.keep = ablated, off, keep
        self.seen: list = []
        self.final = None  # the last stream after the hook (set when the logits input runs)
        self.block: dict = {}  # layer -> (sources seen, [b, p, 3h + 1, d] updates)

    def wants(self, name):
        return name in self.outs or name in self.ins

    def __call__(self, name, x):
        if name in self.ins and self.seen:
            x = x + (self._delta(name, x) if self.post is not None else self._linear(name, x))
        if name in self.outs:
            self.seen.append(x if x.ndim == 4 else x[:, :, None])
        if name == self.ins[-1]:  # the logits' input: the last layer's resid_post
            self.final = x
        return x

    def _diff(self, lo: int, hi: int):
        """a_u - z_u(this run) of sources lo..hi-1 (kept dimensions zeroed)."""
        cur = jnp.concatenate(self.seen, 2)[:, :, lo:hi]
        diff = self.ablated[:, :, lo:hi] - cur
        return diff if self.keep is None else diff * (1 - self.keep[lo:hi])

    def _linear(self, name, x):
        """Additive families: one contraction per layer for all its q/k/v/MLP inputs, the
        MLP topped up with the sources seen since (its own layer's heads)."""
        k = sum(s.shape[2] for s in self.seen)
        start, stop = self._columns(name)
        layer = sites_mod.parse(name).layer
        if layer is None or name.endswith("hook_resid_post"):
            d = jnp.einsum("bpsd,st->bptd", self._diff(0, k), self.off[:k, start:stop])
            return self._shape(d, x)
        base = layer * (3 * self.h + 1)
        cols = slice(base, base + 3 * self.h + 1)
        if layer not in self.block:
            d = jnp.einsum("bpsd,st->bptd", self._diff(0, k), self.off[:k, cols])
            self.block[layer] = (k, d)
        k0, d = self.block[layer]
        d = d[:, :, start - base : stop - base]
        if k > k0:
            d = d + jnp.einsum("bpsd,st->bptd", self._diff(k0, k), self.off[k0:k, start:stop])
        return self._shape(d, x)

    def _delta(self, name, x):
        """Post-norm families: the input and the MLPs stay additive; each seen layer's
        heads go through that layer's norm, all layers in one batched op (so the program
        grows with the layers, not with their square)."""
        cur = jnp.concatenate(self.seen, 2)
        k = cur.shape[2]
        start, stop = self._columns(name)
        diff, off = self.ablated[:, :, :k] - cur, self.off[:k, start:stop]
        if self.keep is not None:  # dimensions of a source in the circuit stay as they are
            diff = diff * (1 - self.keep[:k])
        h = self.h
        n_seen = sum(1 for l in range(self.model.config.n_layers) if (l + 1) * (h + 1) <= k)
        additive = np.ones(k, bool)
        heads = np.asarray([[1 + l * (h + 1) + i for i in range(h)] for l in range(n_seen)], int)
        additive[heads.reshape(-1)] = False
        d = jnp.einsum("bpsd,st->bptd", diff, off * jnp.asarray(additive, off.dtype)[:, None])
        if n_seen:
            res = cur[:, :, heads]  # [b, p, layers, h, d]: this run's head results
            base = res.sum(3)  # each layer's summed head results, before its norm
            mixed = base[:, :, :, None] + jnp.einsum(
                "bplhd,lht->bpltd", diff[:, :, heads], off[heads]
            )  # [b, p, layers, t, d]
            layers = list(range(n_seen))
            normed = self.post(self.model, layers, mixed)
            clean = self.post(self.model, layers, base[:, :, :, None])
            d = d + (normed - clean).sum(2)
        return self._shape(d, x)

    @staticmethod
    def _shape(d, x):
        """[b, p, t, d] -> the destination's shape (no head axis for MLP and logits)."""
        return d if x.ndim == 4 else d[:, :, 0]

    def _columns(self, name):
        """(start, stop) of `name` in the destination order [q.., k.., v.., mlp] per layer."""
        info, h = sites_mod.parse(name), self.h
        if info.hook == "hook_resid_post":
            return self.off.shape[1] - 1, self.off.shape[1]
        assert info.layer is not None  # every destination but the logits is in a block
        base = info.layer * (3 * h + 1)
        if info.hook == "hook_mlp_in":
            return base + 3 * h, base + 3 * h + 1
        start = base + "qkv".index(info.hook[5]) * h
        return start, start + h


def _real(mask, shape):
    """[b, p, 1, 1] weights of real tokens (all ones without a mask)."""
    if mask is None:
        return jnp.ones(shape[:2] + (1, 1))
    return jnp.asarray(mask, jnp.float32)[:, :, None, None]


def ablated_outputs(model, clean, corrupted, mask, ablation: str):
    """Every source's ablated output, [b, p, n_src, d] (mean and zero broadcast over b, p).

    "mean" is each source's mean output over the clean prompts' real positions.
    """
    outs = _out_sites(model.config.n_layers)
    if ablation == "corrupted":
        return _stack_nodes(run(model, corrupted, capture=outs, attention_mask=mask).cache, outs)
    shape = jax.eval_shape(
        lambda: _stack_nodes(run(model, clean, capture=outs, attention_mask=mask).cache, outs)
    ).shape
    if ablation == "zero":
        return jnp.zeros((1, 1) + shape[2:])
    z = _stack_nodes(run(model, clean, capture=outs, attention_mask=mask).cache, outs)
    w = _real(mask, shape)
    return ((z * w).sum((0, 1)) / w.sum((0, 1)))[None, None]


def _check_ablation(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise InputError(f"ablation {ablation!r}; valid: {ABLATIONS}")


def _graph_metric(model, clean, ablated, off, keep, metric, mask):
    """The metric of one circuit. The unembedding is applied only where the metric reads
    (`metric_of_final`: one position per row for `mechjax.metrics`), to the last stream
    as the graph hook left it; the forward's own full logits go unused and XLA drops
    them (on Gemma 3's 262k vocabulary they were most of a circuit's memory)."""
    hook = _GraphHook(model, ablated, off, keep, post_attn_norm(model))
    model.forward(clean, hook=hook, attention_mask=mask)
    return metric_of_final(model, hook.final, clean, mask, metric)


def evaluate_graph(
    model: Model,
    clean,
    corrupted,
    metric: Callable,
    in_circuit,
    *,
    ablation: str = "corrupted",
    neurons=None,
    attention_mask=None,
):
    """The metric with every edge outside `in_circuit` ([n_src, n_dst] bool) ablated.

    `in_circuit` may carry leading batch axes (one circuit each; up to `CIRCUIT_BATCH`
    side by side in one compiled program, reused for every chunk); entries outside the
    graph (`graph_of(model).valid`) are ignored.
    `neurons` ([n_src, d_model] bool, with the same leading axes if any) keeps part of each
    source's output (MIB's neuron level); `ablation` is "corrupted", "mean" or "zero".
    Pass circuits through `construction.prune` first to evaluate them as MIB does.
    """
    _check_ablation(ablation)
    model, clean, corrupted = _prepare(model, clean, corrupted)
    valid = jnp.asarray(graph_of(model).valid)
    circ = jnp.asarray(in_circuit)
    if circ.shape[-2:] != valid.shape:
        raise InputError(
            f"in_circuit has shape {tuple(circ.shape)}; expected [..., {valid.shape[0]}, "
            f"{valid.shape[1]}] (n_src, n_dst of graph_of(model))"
        )
    keep = None
    if neurons is not None:
        keep = jnp.asarray(neurons).astype(jnp.float32)
        want = circ.shape[:-2] + (valid.shape[0], model.config.d_model)
        if keep.shape != want:
            raise InputError(f"neurons has shape {tuple(keep.shape)}; expected {want}")
    arrays, static = split_static(metric)
    ablated = _ablated(model, clean, corrupted, attention_mask, ablation=ablation)
    args = (model, clean, attention_mask, ablated, valid, arrays)
    if circ.ndim == 2:
        return _evaluate(*args, circ, keep, static=static)
    lead, n = circ.shape[:-2], int(np.prod(circ.shape[:-2]))
    circ = circ.reshape((n,) + valid.shape)
    keep = None if keep is None else keep.reshape((n,) + keep.shape[-2:])
    # 1, 2, 4, 8 or 16 side by side, fewer where one circuit's stream copies are large
    size = min(_chunk_cap(clean.shape, valid.shape[0], model.config.d_model),
               1 << (n - 1).bit_length())  # fmt: skip
    pad = -n % size

    def padded(x):  # copies of the last circuit fill the last chunk; dropped below
        return jnp.concatenate([x, jnp.repeat(x[-1:], pad, 0)]) if pad else x

    circ = padded(circ)
    keep = None if keep is None else padded(keep)
    out = [
        _evaluate_many(
            *args, circ[i : i + size], None if keep is None else keep[i : i + size], static=static
        )  # fmt: skip
        for i in range(0, n + pad, size)
    ]
    return jnp.concatenate(out)[:n].reshape(lead)


CIRCUIT_BATCH = 16  # at most this many circuits evaluated side by side (vmapped)
CHUNK_BYTES = 1 << 30  # about what a chunk's copies of the sources' outputs may take


def _chunk_cap(tokens_shape, n_src: int, d_model: int) -> int:
    """Circuits per chunk: a circuit's evaluation holds several [b, p, n_src, d] float32
    copies of the sources' outputs (about 8 live at once), so Gemma 3 270M on 8 prompts
    of 15 tokens (28 MB a copy) runs 4 at a time, tiny test models 16."""
    one = int(np.prod(tokens_shape)) * n_src * d_model * 4 * 8
    cap = max(1, CHUNK_BYTES // max(one, 1))
    return min(CIRCUIT_BATCH, 1 << (cap.bit_length() - 1))


@functools.partial(jax.jit, static_argnames=("ablation",))
def _ablated(model, clean, corrupted, mask, *, ablation):
    return ablated_outputs(model, clean, corrupted, mask, ablation)


def _metric_of(model, clean, mask, ablated, valid, metric, in_circuit, keep):
    circ = in_circuit.astype(bool)
    if keep is not None:  # an edge counts as in only if its source is wholly kept (EAP-IG)
        circ = circ & (keep.sum(-1) == keep.shape[-1])[..., None]
    # only edges of the graph carry ablated values: in a parallel block a layer's heads
    # are computed before its MLP reads the block input, but have no edge to it
    off = (valid & ~circ).astype(ablated.dtype)
    return _graph_metric(model, clean, ablated, off, keep, metric, mask)


@functools.partial(jax.jit, static_argnames=("static",))
def _evaluate(model, clean, mask, ablated, valid, arrays, in_circuit, keep, *, static):
    """One circuit."""
    metric = join_static(arrays, static)
    return _metric_of(model, clean, mask, ablated, valid, metric, in_circuit, keep)


@functools.partial(jax.jit, static_argnames=("static",))
def _evaluate_many(model, clean, mask, ablated, valid, arrays, in_circuit, keep, *, static):
    """A chunk of circuits side by side (vmapped). `evaluate_graph` calls this one
    compiled program for every chunk, so any number of circuits on the same model and
    prompts compiles once per chunk size (and the ablated run is computed once)."""
    metric = join_static(arrays, static)
    return jax.vmap(lambda c, k: _metric_of(model, clean, mask, ablated, valid, metric, c, k))(
        in_circuit, keep
    )
