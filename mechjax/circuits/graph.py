"""The node/edge graph of a model, as EAP-IG builds it (`hannamw/EAP-IG`, used by MIB).

- source nodes (outputs): `input` (the embeddings, `blocks.0.hook_resid_pre`), every
  attention head `a{l}.h{h}` (its `attn.hook_result`) and every MLP `m{l}`
  (`hook_mlp_out`);
- destination nodes (inputs): each head's separate q, k and v input
  (`hook_q_input`/`k_input`/`v_input`), each MLP's input (`hook_mlp_in`) and the
  logits (the final `hook_resid_post`); grouped-query attention is ungrouped first
  (`ungroup_gqa`), so every query head has its own k and v inputs;
- an edge u -> v exists when v reads a residual stream that u's output was added to.

Families whose graph differs from the sequential pre-norm one:

- parallel-residual blocks (GPT-NeoX/Pythia with `parallel_residual`): the attention
  and the MLP of a layer both read the block input, so the MLP's upstream set is the
  attention's (the input and every node of earlier layers) and there is no edge from a
  layer's heads to its own MLP (EAP-IG's `Graph` for parallel models does the same);
- GPT-J: always parallel (attention and MLP both read the block's one layer norm);
- a post-attention norm (Gemma 2 and 3's `ln1_post`, OLMo 2's plain RMSNorm, applied to
  the summed attention output before it joins the residual stream): the per-head
  results are not additive in the residual stream, so circuit evaluation recomputes
  the norm of the head results as mixed for each downstream input (see
  `mechjax.circuits.evaluation`); the post-MLP norm is inside `hook_mlp_out`, so an
  MLP node stays additive;
- a mixture of experts (Mixtral) is one MLP node per layer (`hook_mlp_out` sums the
  experts);
- post-LN encoders (BERT): each sublayer's output is normalised together with the
  residual it joins, so no node's output is a summand of a later input; the graph is
  not defined and `graph_of` refuses them.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import numpy as np

from mechjax.errors import InputError
from mechjax.hooks import NULL_HOOK
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
        w = attn.get("k_norm", {}).get("w")
        if w is not None and w.shape[-1] == cfg.n_kv_heads * cfg.d_head != cfg.d_head:
            # a QK-norm over the whole key (OLMo 2): repeat each head's gains; the mean
            # square over the repeated heads is the same, so the function is unchanged
            w = jnp.repeat(w.reshape(cfg.n_kv_heads, cfg.d_head), g, axis=0).reshape(-1)
            attn["k_norm"] = {**attn["k_norm"], "w": w}
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


def _stacked_gains(model: Model, layers, name: str = "ln1_post"):
    """[len(layers), 1, d_model]: each layer's norm gain, broadcast over [..., layers, t, d]."""
    return jnp.stack([model.params["blocks"][l][name]["w"] for l in layers])[:, None, :]


def _gemma3_post_attn(model: Model, layers, x):
    """Gemma 2/3's `ln1_post` of each layer on summed attention outputs
    `x` [..., len(layers), t, d_model] (slice l normalised with layer l's gain)."""
    # the model's own norm (a package-dir mapping, so reached through the importer)
    norm = importlib.import_module("mechjax.models.gemma3")._norm
    return norm(x, _stacked_gains(model, layers), model.config, NULL_HOOK, "")


def _rms_post_attn(model: Model, layers, x):
    """OLMo 2's `ln1_post` (a plain RMSNorm, gain w), as `_gemma3_post_attn`."""
    from mechjax import nn

    return nn.rms_norm(x, _stacked_gains(model, layers), model.config.eps, NULL_HOOK, "")


class FamilyGraph(NamedTuple):
    """How a family's blocks map onto the edge graph (one row of `FAMILY_GRAPHS`).

    parallel: config -> whether attention and MLP both read the block input;
    post_attn_norm: f(model, layers, x) = what joins the residual stream for summed head
      results x [..., len(layers), t, d_model] of those layers (slice by slice, each with
      its layer's norm), for families that normalise the attention output (None: it
      joins as is). One call covers every layer, so programs grow linearly in depth.
    """

    parallel: Callable[[Any], bool] = lambda cfg: False
    post_attn_norm: Callable | None = None


# family name -> its graph, or the reason it has none. A new family gets a row once its
# residual stream is checked to be a sum of node outputs (tests/test_circuits_families.py
# compares every edge with a hand-patched forward); until then circuits refuse it.
FAMILY_GRAPHS: dict[str, FamilyGraph | str] = {
    "gpt2": FamilyGraph(),
    "llama": FamilyGraph(),
    "neox": FamilyGraph(parallel=lambda cfg: bool(getattr(cfg, "parallel_residual", False))),
    "gemma3": FamilyGraph(post_attn_norm=_gemma3_post_attn),
    "gemma2": FamilyGraph(post_attn_norm=_gemma3_post_attn),  # Gemma 3's block and norm
    "olmo2": FamilyGraph(post_attn_norm=_rms_post_attn),
    "qwen3": FamilyGraph(),
    "phi3": FamilyGraph(),
    "mixtral": FamilyGraph(),  # the mixture of experts is one MLP node per layer
    "gptj": FamilyGraph(parallel=lambda cfg: True),  # attention and MLP read ln1(resid)
    "bert": "a post-LN encoder: each sublayer's output is normalised with the residual "
    "stream it joins, so node outputs are not additive",
    "toy": "the toy family has no split q/k/v input sites (hook_q_input/k_input/v_input)",
}


def family_graph(model: Model) -> FamilyGraph:
    """The family's row of `FAMILY_GRAPHS`; `InputError` naming the family if it has none."""
    name = model.family.name
    row = FAMILY_GRAPHS.get(name)
    if row is None:
        known = sorted(k for k, v in FAMILY_GRAPHS.items() if isinstance(v, FamilyGraph))
        row = (
            f"it is not in mechjax.circuits.graph.FAMILY_GRAPHS (families with a graph: "
            f"{known}); add its row once its residual stream is checked to be a sum of "
            "node outputs"
        )
    if isinstance(row, str):
        raise InputError(f"circuits: family {name!r} has no defined edge graph: {row}")
    return row


def is_parallel(model: Model) -> bool:
    """Whether each block's attention and MLP both read the block input."""
    return bool(family_graph(model).parallel(model.config))


def _check_family(model: Model) -> None:
    """Refuse families whose residual stream is not (known to be) a sum of node outputs."""
    family_graph(model)


def graph_of(model: Model) -> Graph:
    """The EAP-IG graph of `model` (heads ungrouped; parallel blocks as the module says)."""
    _check_family(model)
    n, h = model.config.n_layers, model.config.n_heads
    # an MLP reads the stream after its layer's heads, or (parallel) the block input
    mlp_in = 0.0 if is_parallel(model) else 0.5
    src, src_layer = ["input"], [-1.0]
    dst, dst_layer = [], []
    for l in range(n):
        src += [f"a{l}.h{i}" for i in range(h)] + [f"m{l}"]
        src_layer += [l] * h + [l + 0.5]
        dst += [f"a{l}.h{i}<{s}>" for s in "qkv" for i in range(h)] + [f"m{l}"]
        dst_layer += [l] * (3 * h) + [l + mlp_in]
    dst.append("logits")
    dst_layer.append(n)
    valid = np.asarray(src_layer)[:, None] < np.asarray(dst_layer)[None, :]
    return Graph(tuple(src), tuple(dst), valid)


def post_attn_norm(model: Model) -> Callable | None:
    """The family's post-attention norm as f(model, layer, x), or None if it has none."""
    return family_graph(model).post_attn_norm


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
    _check_family(model)
    clean, corrupted = _check_pair(clean, corrupted)
    if "blocks.0.hook_q_input" not in model.sites:
        raise InputError(f"family {model.family.name!r} has no split q/k/v input sites")
    return ungroup_gqa(model), clean, corrupted
