"""A loaded model as a value, and `run`: the one pure entry point to a forward pass.

`Model` is a pytree whose only leaves are its parameters; config, family and tokenizer
are static. So `jax.jit(mj.run)(model, tokens, hooks)` traces once per config and
capture set, `jax.grad` can differentiate with respect to `model.params`, and nothing
is closed over.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mechjax import sites as sites_mod
from mechjax.errors import InputError, SiteError
from mechjax.hooks import HookContext
from mechjax.interventions import normalize_hooks

Array = jax.Array


class Family(NamedTuple):
    """The functions that define one architecture family (one file in `models/`)."""

    name: str
    forward: Callable
    site_names: Callable
    config_from_hf: Callable | None = None
    params_from_hf: Callable | None = None
    init: Callable | None = None
    decode: Callable | None = None  # KV-cache step (generation), where the family has one


@struct.dataclass
class Model:
    """Parameters (the only pytree leaves) plus static config, family and tokenizer."""

    params: Any
    config: Any = struct.field(pytree_node=False)
    family: Family = struct.field(pytree_node=False)
    tokenizer: Any = struct.field(pytree_node=False, default=None)

    @property
    def sites(self) -> list[str]:
        """Every valid site name, in forward order."""
        return _site_list(self.family, self.config)

    def forward(self, tokens, *, hook=None, attention_mask=None):
        kw = {} if hook is None else {"hook": hook}
        return self.family.forward(
            self.params, tokens, self.config, attention_mask=attention_mask, **kw
        )


_SITE_CACHE: dict = {}


def _site_list(family: Family, config) -> list[str]:
    key = (family.name, config)
    if key not in _SITE_CACHE:
        _SITE_CACHE[key] = list(family.site_names(config))
    return _SITE_CACHE[key]


class Output(NamedTuple):
    """What `run` returns: logits [batch, pos, d_vocab] and the captured activations."""

    logits: Array
    cache: dict[str, Array]


def check_tokens(tokens, d_vocab: int) -> Array:
    """Validate a [batch, pos] integer token array; ids are range-checked when concrete."""
    if isinstance(tokens, (list, tuple)):
        tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise InputError(
            f"tokens must be a [batch, pos] integer array, got shape {tuple(tokens.shape)}; "
            "wrap a single prompt as tokens[None]"
        )
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise InputError(f"tokens must be integers, got dtype {tokens.dtype}")
    if not isinstance(tokens, jax.core.Tracer) and tokens.size:
        host = np.asarray(tokens)  # concrete: checked on the host, even inside a trace
        lo, hi = int(host.min()), int(host.max())
        if lo < 0 or hi >= d_vocab:
            bad = lo if lo < 0 else hi
            raise InputError(f"token id {bad} is outside the vocabulary [0, {d_vocab})")
    return jnp.asarray(tokens)


def run(
    model: Model,
    tokens,
    hooks: Mapping[str, Any] | None = None,
    capture: Sequence[str] | str = (),
    *,
    attention_mask=None,
) -> Output:
    """Run the model with interventions and return logits and the captured sites.

    Pure: usable under `jax.jit` (pass `capture` as a static argument), `jax.vmap` (over
    tokens or over intervention values) and `jax.grad` (with respect to params or
    intervention leaves).

    Args:
      model: a `Model` from `mj.load` or built from a family's `init`.
      tokens: [batch, pos] integer array.
      hooks: site name -> intervention or sequence of interventions (applied in order).
      capture: site names to keep in `Output.cache` (after interventions at that site).
      attention_mask: optional [batch, pos] bool, True for real tokens.
    """
    if isinstance(capture, str):
        capture = (capture,)
    ivs = normalize_hooks(hooks)
    valid = model.sites
    sites_mod.check(ivs, valid)
    sites_mod.check(capture, valid, what="capture site")
    tokens = check_tokens(tokens, _vocab(model.config))
    ctx = HookContext(ivs, capture)
    logits = model.forward(tokens, hook=ctx, attention_mask=attention_mask)
    missed = (set(ivs) | set(capture)) - set(ctx.visited)
    if missed:
        raise SiteError(
            f"sites {sorted(missed)} were not computed in this run: split q/k/v input sites "
            "bypass the unsplit ln1 sites of the same layer, so the two cannot be combined"
        )
    return Output(logits, {name: ctx.cache[name] for name in capture})


def _vocab(config) -> int:
    return config.d_vocab


def run_with_cache(model: Model, tokens, capture: Sequence[str] | None = None, **kw) -> Output:
    """`run` capturing `capture` (default: every site but the expensive per-head ones)."""
    if capture is None:
        expensive = ("hook_result", "_input")
        capture = [s for s in model.sites if not s.endswith(expensive)]
    return run(model, tokens, capture=capture, **kw)
