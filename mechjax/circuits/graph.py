"""The node/edge graph of a model, as EAP-IG builds it (`hannamw/EAP-IG`, used by MIB).

- source nodes (outputs): `input` (the embeddings, `blocks.0.hook_resid_pre`), every
  attention head `a{l}.h{h}` (its `attn.hook_result`) and every MLP `m{l}`
  (`hook_mlp_out`);
- destination nodes (inputs): each head's separate q, k and v input
  (`hook_q_input`/`k_input`/`v_input`), each MLP's input (`hook_mlp_in`) and the
  logits (the final `hook_resid_post`); grouped-query attention is ungrouped first
  (`ungroup_gqa`), so every query head has its own k and v inputs;
- an edge u -> v exists when u is computed before v reads the residual stream.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from mechjax.errors import InputError
from mechjax.model import Model
from mechjax.patching.blocks import _check_pair

__all__ = ["Graph", "graph_of", "ungroup_gqa"]


def ungroup_gqa(model: Model) -> Model:
    """The same function with one k/v head per query head (W_K, W_V repeated)."""
    cfg = model.config
    if getattr(cfg, "n_kv_heads", cfg.n_heads) == cfg.n_heads:
        return model
    g = cfg.n_heads // cfg.n_kv_heads
    blocks = []
    for b in model.params["blocks"]:
        attn = dict(b["attn"])
        for k in ("W_K", "W_V", "b_K", "b_V"):
            if k in attn:
                attn[k] = jnp.repeat(attn[k], g, axis=0)
        blocks.append({**b, "attn": attn})
    params = {**model.params, "blocks": blocks}
    return dataclasses.replace(
        model, params=params, config=dataclasses.replace(cfg, n_kv_heads=cfg.n_heads)
    )


class Graph(NamedTuple):
    """Node names and the edge mask `valid[src, dst]`."""

    src: tuple
    dst: tuple
    valid: np.ndarray

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    def edges(self, scores) -> list[tuple[str, str, float]]:
        """(src, dst, score) of every edge, in graph order."""
        s = np.asarray(scores)
        return [(self.src[i], self.dst[j], float(s[i, j])) for i, j in zip(*np.nonzero(self.valid))]


def graph_of(model: Model) -> Graph:
    """The EAP-IG graph of `model` (heads ungrouped)."""
    n, h = model.config.n_layers, model.config.n_heads
    src, src_layer = ["input"], [-1]
    dst, dst_layer = [], []
    for l in range(n):
        src += [f"a{l}.h{i}" for i in range(h)] + [f"m{l}"]
        src_layer += [l] * h + [l + 0.5]
        dst += [f"a{l}.h{i}<{s}>" for s in "qkv" for i in range(h)] + [f"m{l}"]
        dst_layer += [l] * (3 * h) + [l + 0.5]
    dst.append("logits")
    dst_layer.append(n)
    valid = np.asarray(src_layer)[:, None] < np.asarray(dst_layer)[None, :]
    return Graph(tuple(src), tuple(dst), valid)


# ------------------------------------------------------------------------------ sites


def _out_sites(n):
    return ["blocks.0.hook_resid_pre"] + [
        x for l in range(n) for x in (f"blocks.{l}.attn.hook_result", f"blocks.{l}.hook_mlp_out")
    ]


def _in_sites(n):
    return [
        x
        for l in range(n)
        for x in (
            f"blocks.{l}.hook_q_input",
            f"blocks.{l}.hook_k_input",
            f"blocks.{l}.hook_v_input",
            f"blocks.{l}.hook_mlp_in",
        )
    ] + [f"blocks.{n - 1}.hook_resid_post"]


def _stack_nodes(cache, names):
    """Site activations -> [batch, pos, nodes, d_model] in graph order."""
    parts = [cache[k] if cache[k].ndim == 4 else cache[k][:, :, None] for k in names]
    return jnp.concatenate(parts, axis=2)


def _prepare(model, clean, corrupted):
    clean, corrupted = _check_pair(clean, corrupted)
    if "blocks.0.hook_q_input" not in model.sites:
        raise InputError(f"family {model.family.name!r} has no split q/k/v input sites")
    return ungroup_gqa(model), clean, corrupted
