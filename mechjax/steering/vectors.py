"""Steering vectors from paired prompts, and the two steering interventions.

Stolfo et al. (2025), "Improving Instruction-Following in Language Models through
Activation Steering": for prompts x+ (query with an instruction) and x- (the same query
without it), the vector of layer l is u_l = mean_i(h_l(x+_i) - h_l(x-_i)), with h_l the
residual stream after block l (`resid_post`) at the last prompt token. Steering then
either sets the projection on the unit direction u^ to the mean with-instruction value c
(`adjust_rs`: h <- h + (c - h.u^) u^) or adds w u^ (`add_vector`).

    vecs = steering.compute_vectors(model, with_instruction, without_instruction)
    u, c = vecs.direction[12], vecs.projection[12]
    mj.generate(model, prompts, 64, hooks={"blocks.12.hook_resid_post": steering.adjust_rs(u, c)})

`compute_vectors` runs every pair through one compiled program (both sides padded to one
width) and keeps only `resid_post` of the requested layers at each prompt's last token.

The interventions take per-row values as well as shared ones: `direction` [d] or
[batch, d], `target`/`weight` and `gate` scalars or [batch]. A generation batch can so
hold a whole sweep (layers x coefficients x prompts) in one compiled loop: each row
carries its own coefficient, and a gate of 0 leaves a row's activation bit-identical
(h + 0 * (...) = h).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
from flax import struct

from mechjax.errors import InputError, InterventionError
from mechjax.harvest import harvest
from mechjax.interventions import Index, Intervention, _as_index, _select
from mechjax.model import Model
from mechjax.typing import Array, is_tracer

__all__ = [
    "AddVector",
    "AdjustRS",
    "SteeringVectors",
    "add_vector",
    "adjust_rs",
    "answer_text",
    "compute_vectors",
    "encode_prompts",
    "prompt_text",
    "resolve_template",
]


# ---------------------------------------------------------------------- prompts

TEMPLATES = ("auto", "chat", "qa", "none")


def prompt_text(model: Model, query: str, template: str = "auto") -> str:
    """The text the model sees for a user `query`.

    `chat`: the tokenizer's chat template (a user turn and the assistant prefix);
    `qa`: "Q: {query}\\nA:", the paper's format for models without a template (base
    Gemma); `none`: the query as is; `auto`: `chat` when the tokenizer has a template,
    else `qa`.
    """
    if template not in TEMPLATES:
        raise InputError(f"template={template!r}; valid: {', '.join(TEMPLATES)}")
    tok = model.tokenizer
    if tok is None:
        raise InputError("steering prompts are text: the model needs a tokenizer")
    if template == "auto":
        template = "chat" if tok.chat_template else "qa"
    if template == "chat":
        if not tok.chat_template:
            raise InputError("template='chat': this model's tokenizer has no chat template")
        return tok.apply_chat_template([{"role": "user", "content": query}])
    if template == "qa":
        return f"Q: {query}\nA:"
    return query


def resolve_template(model: Model, template: str) -> str:
    """`auto` resolved to `chat` or `qa` for this model; other values checked and kept."""
    if template not in TEMPLATES:
        raise InputError(f"template={template!r}; valid: {', '.join(TEMPLATES)}")
    if template != "auto":
        return template
    return "chat" if model.tokenizer is not None and model.tokenizer.chat_template else "qa"


def answer_text(text: str, model: Model, template: str = "auto") -> str:
    """The answer part of a generated text: with the `qa` format a base model goes on
    to write the next "Q:" itself, so the text is cut there; otherwise unchanged."""
    if resolve_template(model, template) == "qa":
        return text.split("\nQ:")[0]
    return text


def encode_prompts(model: Model, queries: Sequence[str], template: str = "auto") -> list[list[int]]:
    """Token ids of each query through `prompt_text` (the model's BOS convention)."""
    if isinstance(queries, str):
        raise InputError("queries must be a list of strings, not one string")
    assert model.tokenizer is not None  # checked by prompt_text
    return [model.tokenizer.encode(prompt_text(model, q, template)) for q in queries]


# ---------------------------------------------------------------------- vectors


class SteeringVectors(NamedTuple):
    """Per-layer steering vectors (row i of each array is layer `layers[i]`).

    Attributes:
      layers: the layers, in order.
      diff: [n_layers, d_model] u_l = mean(h+ - h-), float32.
      direction: [n_layers, d_model] u_l / |u_l|.
      projection: [n_layers] c_l = mean_i h_l(x+_i) . u^_l, the `adjust_rs` target.
      norm: [n_layers] |u_l|, the scale of `add_vector` weights.
      n_pairs: how many pairs were averaged.
    """

    layers: tuple[int, ...]
    diff: np.ndarray
    direction: np.ndarray
    projection: np.ndarray
    norm: np.ndarray
    n_pairs: int

    def index(self, layer: int) -> int:
        """Row of `layer` in the arrays; a clear error for a layer not computed."""
        if layer not in self.layers:
            raise InputError(
                f"no steering vector for layer {layer}; computed for layers {list(self.layers)}"
            )
        return self.layers.index(layer)

    def at(self, layer: int) -> tuple[np.ndarray, float]:
        """(unit direction, mean with-instruction projection) of `layer`."""
        i = self.index(layer)
        return self.direction[i], float(self.projection[i])


def check_layers(model: Model, layers: Sequence[int] | None) -> tuple[int, ...]:
    """Layers as a tuple of ints in [0, n_layers); None means every layer."""
    n = model.config.n_layers
    if layers is None:
        return tuple(range(n))
    out = tuple(int(layer) for layer in layers)
    bad = [layer for layer in out if not 0 <= layer < n]
    if bad:
        raise InputError(f"layer(s) {bad} out of range; the model has layers 0..{n - 1}")
    if not out:
        raise InputError("no layers given")
    return out


def _last_token_resid(
    model: Model, rows: list[list[int]], width: int, layers: tuple[int, ...], batch_size: int
) -> np.ndarray:
    """resid_post of `layers` at each row's last token: [n, n_layers, d] float32."""
    n = len(rows)
    tokens = np.zeros((n, width), np.int32)
    mask = np.zeros((n, width), bool)
    for i, r in enumerate(rows):  # right-padded: the last real token is at len - 1
        tokens[i, : len(r)] = r
        mask[i, : len(r)] = True
    names = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    acts = harvest(
        model,
        tokens,
        names,
        batch_size=batch_size,
        positions=np.array([len(r) - 1 for r in rows]),
        attention_mask=mask,
        progress=False,
    )
    return np.stack([acts[s].astype(np.float32) for s in names], axis=1)


def compute_vectors(
    model: Model,
    with_instruction: Sequence[str],
    without_instruction: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    template: str = "auto",
    batch_size: int = 16,
) -> SteeringVectors:
    """Steering vectors of every layer in `layers` (default all) from paired queries.

    `with_instruction[i]` and `without_instruction[i]` are the same query with and
    without the instruction (plain text; `template` wraps them, see `prompt_text`).
    """
    if isinstance(with_instruction, str) or isinstance(without_instruction, str):
        raise InputError("pass lists of queries, not single strings")
    if len(with_instruction) != len(without_instruction):
        raise InputError(
            f"paired prompts must have equal counts: {len(with_instruction)} with the "
            f"instruction, {len(without_instruction)} without"
        )
    if not with_instruction:
        raise InputError("compute_vectors needs at least one pair")
    layers_t = check_layers(model, layers)
    pos = encode_prompts(model, with_instruction, template)
    neg = encode_prompts(model, without_instruction, template)
    width = max(len(r) for r in pos + neg)
    acts = _last_token_resid(model, pos + neg, width, layers_t, batch_size)
    h_pos, h_neg = acts[: len(pos)], acts[len(pos) :]
    diff = (h_pos - h_neg).mean(0)
    norm = np.linalg.norm(diff, axis=-1)
    if np.any(norm == 0):
        zero = [layers_t[i] for i in np.flatnonzero(norm == 0)]
        raise InputError(
            f"the with- and without-instruction activations are identical at layer(s) {zero}: "
            "are the pairs the same text?"
        )
    direction = diff / norm[:, None]
    projection = np.einsum("nld,ld->l", h_pos, direction) / len(pos)
    return SteeringVectors(layers_t, diff, direction, projection, norm, len(pos))


# ---------------------------------------------------------------------- interventions


def _rows(v: Array, x: Array, site: str, what: str, per_row_ndim: int) -> Array:
    """Broadcast a shared or per-row value against x [batch, pos, ..., d]."""
    if v.ndim == per_row_ndim:
        return v
    if v.ndim == per_row_ndim + 1:
        if v.shape[0] != x.shape[0]:
            raise InterventionError(
                f"per-row {what} at site {site!r} has {v.shape[0]} rows, but the activation "
                f"there has batch {x.shape[0]} (shape {tuple(x.shape)})"
            )
        return v.reshape(v.shape[:1] + (1,) * (x.ndim - v.ndim) + v.shape[1:])
    raise InterventionError(
        f"{what} at site {site!r} has shape {tuple(v.shape)}; expected "
        + ("[d] or [batch, d]" if per_row_ndim == 1 else "a scalar or [batch]")
    )


def _direction(u: Array, x: Array, site: str) -> Array:
    if u.shape[-1:] != x.shape[-1:]:
        raise InterventionError(
            f"steering direction at site {site!r} has dimension {u.shape[-1:]}, but the "
            f"activation's last axis is {x.shape[-1]} (shape {tuple(x.shape)})"
        )
    return _rows(u, x, site, "direction", 1).astype(jnp.float32)


@struct.dataclass
class AdjustRS(Intervention):
    """h <- h + gate (target - h.u) u: set the projection on unit `direction` to `target`."""

    direction: Array
    target: Array
    gate: Array
    positions: Index | None = None

    def apply(self, x, site):
        u = _direction(jnp.asarray(self.direction), x, site)
        c = _rows(jnp.asarray(self.target, jnp.float32), x, site, "target", 0)
        g = _rows(jnp.asarray(self.gate, jnp.float32), x, site, "gate", 0)
        xf = x.astype(jnp.float32)
        proj = jnp.sum(xf * u, axis=-1, keepdims=True)
        new = (xf + g * (c - proj) * u).astype(x.dtype)
        return _select(x, new, site, self.positions, None)


@struct.dataclass
class AddVector(Intervention):
    """h <- h + weight u (u the unit `direction`; weight shared or per row)."""

    direction: Array
    weight: Array
    positions: Index | None = None

    def apply(self, x, site):
        u = _direction(jnp.asarray(self.direction), x, site)
        w = _rows(jnp.asarray(self.weight, jnp.float32), x, site, "weight", 0)
        new = (x.astype(jnp.float32) + w * u).astype(x.dtype)
        return _select(x, new, site, self.positions, None)


def _unit(direction) -> Array:
    u = jnp.asarray(direction, jnp.float32)
    if u.ndim not in (1, 2):
        raise InterventionError(f"direction must be [d] or [batch, d], got shape {u.shape}")
    n = jnp.linalg.norm(u, axis=-1, keepdims=True)
    if not is_tracer(n) and bool(jnp.any(n == 0)) and u.ndim == 1:
        raise InterventionError("the steering direction is the zero vector")
    return u / jnp.where(n == 0, 1.0, n)  # zero rows of a per-row stack stay zero


def adjust_rs(direction, target, *, gate=1.0, positions=None) -> AdjustRS:
    """Set the projection on `direction` (normalised here) to `target`, at every position
    (or at `positions`). `gate` 0 turns it off for a row (or all)."""
    return AdjustRS(
        _unit(direction),
        jnp.asarray(target, jnp.float32),
        jnp.asarray(gate, jnp.float32),
        _as_index(positions),
    )


def add_vector(direction, weight, *, positions=None) -> AddVector:
    """Add `weight` times the unit `direction` at every position (or at `positions`)."""
    return AddVector(_unit(direction), jnp.asarray(weight, jnp.float32), _as_index(positions))
