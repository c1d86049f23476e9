"""A loaded model as a value, and `run`: the one pure entry point to a forward pass.

`Model` is a pytree whose only leaves are its parameters; config, family and tokenizer
are static. So `jax.jit(mj.run)(model, tokens, hooks)` traces once per config and
capture set, `jax.grad` can differentiate with respect to `model.params`, and nothing
is closed over.

`run` compiles by default: an eager call checks its inputs on the host (site names,
token ids, intervention indices), then calls one jitted program per static signature
(family, config, capture set, intervention structure, whether a mask is given; jit
itself keys on shapes and dtypes). New tokens of the same shape or new intervention
values reuse it. Inside a user's `jit`, `vmap` or `grad` the same program is a nested
jit, which JAX inlines.

Strings are accepted where tokens are: `run(model, "text")` tokenizes with the model's
BOS convention; a list of strings is right-padded and run with an attention mask.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mechjax import sites as sites_mod
from mechjax.errors import InputError, SiteError
from mechjax.hooks import HookContext
from mechjax.interventions import check_index_range, normalize_hooks
from mechjax.typing import is_tracer

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


# Families whose forward returns hidden states, not next-token logits.
ENCODER_FAMILIES = frozenset({"bert"})

_REPR_FIELDS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_head", "d_mlp", "d_vocab")


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

    def to_tokens(self, text: str | Sequence[str], prepend_bos: bool | None = None) -> Array:
        """int32 [batch, pos] token ids of a string or a list of strings (right-padded).

        `prepend_bos=None` follows the model's own convention (SmolLM2: none, Gemma: BOS).
        For a list, `model.tokenizer.encode_batch(texts)` also gives the mask and lengths.
        """
        tok = _tokenizer(self)
        if isinstance(text, str):
            return jnp.asarray([tok.encode(text, add_bos=prepend_bos)], jnp.int32)
        return jnp.asarray(_encode_texts(tok, text, prepend_bos).tokens, jnp.int32)

    def to_str_tokens(self, text_or_ids, prepend_bos: bool | None = None) -> list:
        """Each token as a string: of a text (tokenized as `to_tokens` does) or of ids.

        A [batch, pos] array with batch > 1 gives one list per row.
        """
        tok = _tokenizer(self)
        if isinstance(text_or_ids, str):
            return tok.to_str_tokens(text_or_ids, add_bos=prepend_bos)
        ids = _host_ids(text_or_ids)
        if ids.ndim == 2 and ids.shape[0] > 1:
            return [tok.to_str_tokens(row) for row in ids]
        return tok.to_str_tokens(ids.reshape(-1))

    def to_string(self, ids) -> str | list[str]:
        """Decoded text: a str for one sequence ([pos] or int), a list for [batch, pos]."""
        tok = _tokenizer(self)
        ids = _host_ids(ids)
        if ids.ndim == 2:
            return [tok.decode(row) for row in ids]
        return tok.decode(ids.reshape(-1))

    def __repr__(self) -> str:
        cfg = ", ".join(
            f"{k}={getattr(self.config, k)}" for k in _REPR_FIELDS if hasattr(self.config, k)
        )
        n = sum(math.prod(np.shape(x)) for x in jax.tree.leaves(self.params))
        tok = "yes" if self.tokenizer is not None else "no"
        return f"Model({self.family.name}, {cfg}, params={_count(n)}, tokenizer={tok})"


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _tokenizer(model: Model):
    if model.tokenizer is None:
        raise InputError(
            "this model has no tokenizer (built from a config, not loaded): pass token ids "
            "as an int [batch, pos] array instead of text"
        )
    return model.tokenizer


def _host_ids(ids) -> np.ndarray:
    if is_tracer(ids):
        raise InputError("token ids are traced here; decode them outside jit")
    arr = np.asarray(ids)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"token ids must be integers, got dtype {arr.dtype}")
    if arr.ndim > 2:
        raise InputError(f"token ids must be [pos] or [batch, pos], got shape {arr.shape}")
    return arr


def _encode_texts(tok, texts, prepend_bos):
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InputError("expected a string or a non-empty list of strings")
    # Right padding: the real tokens keep positions 0..n-1 (as `forward` counts them from
    # the mask either way) and row b's last real token is at `lengths[b] - 1`.
    return tok.encode_batch(texts, padding_side="right", add_bos=prepend_bos)


_SITE_CACHE: dict = {}


def _site_list(family: Family, config) -> list[str]:
    key = (family.name, config)
    if key not in _SITE_CACHE:
        _SITE_CACHE[key] = list(family.site_names(config))
    return _SITE_CACHE[key]


# ------------------------------------------------------------------------- results


class Cache(dict):
    """Captured activations by site name: a dict that also takes `cache["pattern", 3]`.

    A missing key raises `SiteError` naming the captured sites and how to capture the
    missing one. It is a pytree (like a dict, leaves in sorted key order).
    """

    def __getitem__(self, key):
        name = sites_mod.resolve(key)
        try:
            return dict.__getitem__(self, name)
        except (KeyError, TypeError):
            raise SiteError(self._missing(key, name)) from None

    def __contains__(self, key) -> bool:
        try:
            return dict.__contains__(self, sites_mod.resolve(key))
        except (SiteError, TypeError):
            return False

    def get(self, key, default=None):
        return self[key] if key in self else default

    def _missing(self, key, name) -> str:
        shown = ", ".join(list(self)[:8]) + (", ..." if len(self) > 8 else "")
        captured = f"captured: {len(self)} sites ({shown})" if self else "nothing was captured"
        hint = sites_mod.short_name_hint(name) if isinstance(name, str) else None
        if hint is not None:
            return f"{key!r} is not in the cache ({captured}); {hint}"
        return (
            f"{name!r} is not in the cache ({captured}); capture it with "
            f"mj.run(model, tokens, capture=[..., {name!r}])"
        )

    def __repr__(self) -> str:
        items = [f"{k}: {_describe(v)}" for k, v in list(self.items())[:6]]
        more = f", ... ({len(self)} sites)" if len(self) > 6 else ""
        return "Cache({" + ", ".join(items) + more + "})"


def _describe(x) -> str:
    """`float32[1, 12, 576]` for anything array-like (tracers included)."""
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is None:
        return type(x).__name__
    return f"{dtype}[{', '.join(map(str, shape))}]"


jax.tree_util.register_pytree_with_keys(
    Cache,
    lambda c: (
        tuple((jax.tree_util.DictKey(k), c[k]) for k in sorted(c)),
        tuple(sorted(c)),
    ),
    lambda keys, leaves: Cache(zip(keys, leaves)),
    lambda c: (tuple(c[k] for k in sorted(c)), tuple(sorted(c))),
)


class Output(NamedTuple):
    """What `run` returns: logits [batch, pos, d_vocab] and the captured activations."""

    logits: Array
    cache: Cache

    def __repr__(self) -> str:
        return f"Output(logits={_describe(self.logits)}, cache={self.cache!r})"


# ---------------------------------------------------------------------- checking input


def check_tokens(tokens, d_vocab: int) -> Array:
    """Validate a [batch, pos] integer token array; ids are range-checked when concrete."""
    if isinstance(tokens, (list, tuple)) and any(isinstance(t, str) for t in tokens):
        if not all(isinstance(t, str) for t in tokens):
            raise InputError(
                "tokens must be text, a list of strings, or an int [batch, pos] array; "
                "got a list mixing strings with other values"
            )
        tokens = tokens[0]
    if isinstance(tokens, str):
        raise InputError(
            "got text where token ids are expected: tokenize it with "
            "model.to_tokens(text), or pass it to mj.run, which tokenizes strings"
        )
    if isinstance(tokens, (list, tuple)):
        tokens = np.asarray(tokens)
    if not hasattr(tokens, "ndim") or not hasattr(tokens, "dtype"):
        raise InputError(
            f"tokens must be a [batch, pos] integer array, got {type(tokens).__name__}"
        )
    if tokens.ndim != 2:
        raise InputError(
            f"tokens must be a [batch, pos] integer array, got shape {tuple(tokens.shape)}; "
            "wrap a single prompt as tokens[None]"
        )
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise InputError(f"tokens must be integers, got dtype {tokens.dtype}")
    if not is_tracer(tokens) and tokens.size:
        host = np.asarray(tokens)  # concrete: checked on the host, even inside a trace
        lo, hi = int(host.min()), int(host.max())
        if lo < 0 or hi >= d_vocab:
            bad = lo if lo < 0 else hi
            raise InputError(f"token id {bad} is outside the vocabulary [0, {d_vocab})")
    return jnp.asarray(tokens)


def capture_names(model: Model, capture) -> tuple[str, ...]:
    """`capture` as a tuple of full site names, checked against `model.sites`.

    Accepts one name, a list or tuple of names (kept in that order), a set (ordered as
    `model.sites`), and TransformerLens's tuple form `("pattern", 3)` for any name.
    """
    if capture is None:
        return ()
    if isinstance(capture, str) or sites_mod.is_short_tuple(capture):
        capture = (capture,)
    valid = model.sites
    if isinstance(capture, (set, frozenset)):
        names = {sites_mod.resolve(c) for c in capture}
        sites_mod.check(names, valid, what="capture site")
        return tuple(s for s in valid if s in names)
    names = tuple(dict.fromkeys(sites_mod.resolve(c) for c in capture))
    sites_mod.check(names, valid, what="capture site")
    return names


def _tokens_and_mask(model: Model, tokens, attention_mask):
    """Text -> (tokens, mask); arrays pass through `check_tokens`."""
    text = isinstance(tokens, str) or (
        isinstance(tokens, (list, tuple)) and tokens and all(isinstance(t, str) for t in tokens)
    )
    if not text:
        return check_tokens(tokens, _vocab(model.config)), attention_mask
    if attention_mask is not None:
        raise InputError("attention_mask is built from the text; pass token ids to give one")
    if isinstance(tokens, str):
        return model.to_tokens(tokens), None
    batch = _encode_texts(_tokenizer(model), tokens, None)
    mask = None if batch.attention_mask.all() else jnp.asarray(batch.attention_mask)
    return jnp.asarray(batch.tokens, jnp.int32), mask


# ----------------------------------------------------------------------------- running


def run(
    model: Model,
    tokens,
    hooks: Mapping[Any, Any] | None = None,
    capture: Any = (),  # a name, a sequence or a set of names (or TL tuples)
    *,
    attention_mask=None,
    jit: bool = True,
) -> Output:
    """Run the model with interventions and return logits and the captured sites.

    Compiled by default: each call checks its inputs on the host, then runs a jitted
    program cached per (family, config, capture, intervention structure, mask or not)
    and, inside jit, per shape and dtype. So repeated eager calls with new tokens of the
    same shape or new intervention values do not recompile. `Apply`'s `fn` is part of
    that key: pass the same function object (a module-level function), not a fresh
    lambda per call. `jit=False` runs op by op, for debugging inside a forward (prints,
    breakpoints) or interventions that need concrete values.

    Pure: usable under `jax.jit` (pass `capture` as a static argument), `jax.vmap` (over
    tokens or over intervention values) and `jax.grad` (with respect to params or
    intervention leaves).

    Args:
      model: a `Model` from `mj.load` or built from a family's `init`.
      tokens: [batch, pos] integer array; or a string (tokenized with the model's BOS
        convention, batch 1); or a list of strings (right-padded, run with an attention
        mask; row b's last real token is at `tokenizer.encode_batch(texts).lengths[b] - 1`).
      hooks: site name -> intervention or sequence of interventions (applied in order).
        A site may also be given as TransformerLens's tuple `("resid_pre", 3)`.
      capture: site names to keep in `Output.cache` (after interventions at that site):
        one name, a list or tuple, or a set (ordered as `model.sites`).
      attention_mask: optional [batch, pos] bool, True for real tokens.
      jit: False to run uncompiled.
    """
    tokens, attention_mask = _tokens_and_mask(model, tokens, attention_mask)
    capture = capture_names(model, capture)
    ivs = _resolve_hooks(normalize_hooks(hooks))
    sites_mod.check(ivs, model.sites)
    if jit and _hashable(model):
        ivs = jax.tree.map(_strong, ivs)
        traces = _TRACE_COUNT["run"]
        logits, cache = _compiled(
            model.params, tokens, ivs, attention_mask, model.family, model.config, capture
        )
        if _TRACE_COUNT["run"] != traces:
            _note_compile(model, tokens, ivs, attention_mask, capture)
        _check_indices(ivs, model, tokens.shape)
    else:
        logits, cache = _forward(
            model.params, tokens, ivs, attention_mask, model.family, model.config, capture
        )
    return Output(logits, Cache((name, cache[name]) for name in capture))


def _resolve_hooks(ivs: dict) -> dict:
    out: dict = {}
    for site, seq in ivs.items():
        name = sites_mod.resolve(site)
        out[name] = out.get(name, ()) + tuple(seq)
    return out


def _strong(x):
    """`x` without JAX's weak type, which is part of jit's key: `mj.add(jnp.full(d, 0.5))`
    (weak) and `mj.add(vector)` (not) would otherwise compile twice."""
    if isinstance(x, jax.Array) and not is_tracer(x) and x.weak_type:
        return jax.lax.convert_element_type(x, x.dtype)
    return x


def _hashable(model: Model) -> bool:
    try:
        hash((model.family, model.config))
    except TypeError:  # a config that cannot be a static jit argument runs uncompiled
        return False
    return True


def _forward(params, tokens, ivs, attention_mask, family, config, capture):
    ctx = _RecordingContext(ivs, capture)
    model = Model(params, config, family)
    logits = model.forward(tokens, hook=ctx, attention_mask=attention_mask)
    missed = (set(ivs) | set(capture)) - set(ctx.visited)
    if missed:
        raise SiteError(
            f"sites {sorted(missed)} were not computed in this run: split q/k/v input sites "
            "bypass the unsplit ln1 sites of the same layer, so the two cannot be combined"
        )
    _record_shapes(family, config, tokens.shape, ctx)
    return logits, {name: ctx.cache[name] for name in capture}


# How many times `_compiled` traced its body: a counter a test reads to prove that new
# values and new tokens of one shape reuse the compiled program.
_TRACE_COUNT = {"run": 0}


def _traced(params, tokens, ivs, attention_mask, family, config, capture):
    _TRACE_COUNT["run"] += 1
    return _forward(params, tokens, ivs, attention_mask, family, config, capture)


_compiled = jax.jit(_traced, static_argnums=(4, 5, 6))


# Eager compilations per signature without the static fields of the hooks: when one
# signature keeps compiling, something static (usually `Apply.fn`) is new on every call.
_COMPILES: dict = {}
_WARN_AFTER = 3


def _note_compile(model, tokens, ivs, attention_mask, capture) -> None:
    leaves = jax.tree.leaves((tokens, ivs, attention_mask, model.params))
    if any(is_tracer(x) for x in leaves):
        return  # inside the user's own trace: that trace pays for it, once
    key = (
        model.family.name,
        model.config,
        capture,
        tuple((site, tuple(type(iv).__name__ for iv in seq)) for site, seq in ivs.items()),
        tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves),
    )
    _COMPILES[key] = n = _COMPILES.get(key, 0) + 1
    if n == _WARN_AFTER:
        warnings.warn(
            f"mj.run compiled {n} programs for the same model, shapes and intervention "
            "types: a static part of the hooks is new on every call, usually the function "
            "given to mj.apply_fn (a lambda or closure made per call). Define it once, at "
            "module level, or pass jit=False",
            UserWarning,
            stacklevel=3,
        )


# ------------------------------------------------------------ index checks on the host

# Activation shape of each intervened site, recorded while tracing: under the compiled
# program the intervention's indices are traced, so their range is checked here instead,
# on the host, on every eager call.
_SITE_SHAPES: dict = {}


class _RecordingContext(HookContext):
    """A `HookContext` that also records the activation shape at each intervened site."""

    def __init__(self, interventions, capture=()):
        super().__init__(interventions, capture)
        self.shapes: dict[str, tuple[int, ...]] = {}

    def __call__(self, name, x):
        if name in self.interventions:
            self.shapes[name] = tuple(x.shape)
        return super().__call__(name, x)


def _record_shapes(family, config, shape, ctx: _RecordingContext) -> None:
    if ctx.shapes:
        _SITE_SHAPES.setdefault((family.name, config, tuple(shape)), {}).update(ctx.shapes)


def _check_indices(ivs, model, tokens_shape) -> None:
    """Range-check concrete `positions` / `heads` of each intervention on the host."""
    table = _SITE_SHAPES.get((model.family.name, model.config, tuple(tokens_shape)), {})
    for site, seq in ivs.items():
        shape = table.get(site)
        if shape is None:
            continue
        pos_axis, head_axis = sites_mod.axes(site)
        for iv in seq:
            for what, axis, name in (("positions", pos_axis, "pos"), ("heads", head_axis, "head")):
                idx = getattr(iv, what, None)
                if idx is None or axis is None or is_tracer(idx):
                    continue
                check_index_range(np.asarray(idx), shape[axis], site, what, name)


def _vocab(config) -> int:
    return config.d_vocab


def run_with_cache(model: Model, tokens, capture: Sequence[str] | None = None, **kw) -> Output:
    """`run` capturing `capture` (default: every site but the expensive per-head ones)."""
    if capture is None:
        expensive = ("hook_result", "_input")
        capture = [s for s in model.sites if not s.endswith(expensive)]
    return run(model, tokens, capture=capture, **kw)
