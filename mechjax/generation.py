"""Text generation with a KV cache, compiled loop, sampling and interventions at every step.

    out = mj.generate(model, ["The capital of France is"], 20)                 # greedy
    out = mj.generate(model, prompts, 20, temperature=0.8, top_p=0.9, key=jax.random.key(0))
    out.texts, out.tokens, out.lengths

The prompt is run once into a `KVCache` (the prefill, which produces generated token 0);
each further token is one cached decode step inside a compiled `lax.while_loop`, which
ends when every row has emitted a stop token or `max_new_tokens` are generated. Batched prompts are left-padded; position ids count real
tokens only, so each row generates what it would generate alone.

Interventions apply at every step through the same site names as `mj.run`, with the
current call's tokens on the `pos` axis (the whole prompt at step 0, one token after).
`hooks` is either a dict (applied at every step) or a function `step -> dict` called
inside the compiled loop with `step` a traced int32 scalar, the index of the token being
generated (0 = the prefill). Make values depend on it arithmetically, so the loop never
recompiles; e.g. steering only the first 5 generated tokens:

    hooks = lambda step: {"blocks.3.hook_resid_pre": mj.add(delta * (step < 5))}

An intervention's `positions=` index the current call's `pos` axis: the prompt at step 0,
the single new token after (so `positions=[-1]` is always the newest token).

Arrays a `hooks` function closes over become compile-time constants, and a new function
object compiles anew; to sweep values, pass them as `hook_args` and take them as the
function's second argument: `hooks=lambda step, d: {...: mj.add(d * (step < 5))}`.

Sampling (HF's order): logits / temperature, then top-k, then top-p (nucleus), then a
categorical draw with the key `fold_in(key, step)`, so a key gives the same text from
`generate` and `iter_generate`. `temperature=0` is greedy (argmax).

Progress: `progress=None` (the default) draws a tqdm bar on stderr for long generations
(at least `LONG` new tokens) when stderr is a terminal; `True` always, `False` never. The
bar reports the seconds spent compiling apart from the seconds spent generating, since
the first call of a new shape is mostly compilation. In `generate` the bar is advanced
from inside the compiled loop by a host callback, which is compiled in only when the bar
is on (so the program without a bar is the one benchmarks measure).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import kv_cache, nn
from mechjax import sites as sites_mod
from mechjax.errors import InputError
from mechjax.hooks import HookContext
from mechjax.interventions import normalize_hooks
from mechjax.model import Model
from mechjax.progress import CompileClock, exclude_compile, progress_bar, show_progress, timing_note

Array = jax.Array


class Generation(NamedTuple):
    """What `generate` returns.

    Attributes:
      tokens: [batch, max_new_tokens] generated ids; after a row's stop token, the pad
        id (the tokenizer's, else 0).
      lengths: [batch] generated tokens per row, its stop token included.
      texts: each row's generated text without the stop token (None without a tokenizer).
      prompt: [batch, width] the left-padded prompt tokens that were run.
      prompt_mask: [batch, width] True for real prompt tokens.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    texts: list[str] | None
    prompt: np.ndarray
    prompt_mask: np.ndarray


class _Static(NamedTuple):
    """Everything that shapes the compiled program (hashable, static under jit)."""

    max_new: int
    max_len: int
    greedy: bool
    top_k: int | None
    use_top_p: bool
    stop: tuple[int, ...]
    pad: int
    hooks_fn: Callable | None
    pass_args: bool
    progress: bool = False  # compile in the host callback that advances the bar


# ----------------------------------------------------------------------- progress

LONG = 32  # new tokens from which `progress=None` draws a bar (shorter runs end too soon)

# the bar the compiled loop's callback advances: one generation at a time draws a bar
_ACTIVE_BAR: list = []


def _tick(step) -> None:
    if _ACTIVE_BAR:
        bar = _ACTIVE_BAR[-1]
        n = int(step)
        if n > bar.n:  # unordered callbacks may arrive late; the bar never goes back
            bar.update(n - bar.n)


# ----------------------------------------------------------------------- sampling


def sample_logits(
    logits: Array, key: Array | None, *, temperature=1.0, top_k: int | None = None, top_p=None
) -> Array:
    """Draw token ids [batch] from logits [batch, d_vocab]; `temperature=0` is argmax.

    `temperature` and `top_p` may be traced arrays; `top_k` is static.
    """
    if isinstance(temperature, (int, float)) and temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None:
        desc = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly larger tokens
        keep = before < top_p  # the most likely token is always kept
        threshold = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    if key is None:
        raise InputError("sampling (temperature > 0) needs a PRNG key: pass key=jax.random.key(0)")
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


# ----------------------------------------------------------------------- the program


def decode_fn(model: Model) -> Callable:
    """The family's KV-cache `decode` (a `Family` field if it has one, else its module's)."""
    fn = getattr(model.family, "decode", None)
    if fn is not None:
        return fn
    mod = importlib.import_module(f"mechjax.models.{model.family.name}")
    if not hasattr(mod, "decode"):
        raise InputError(
            f"the {model.family.name!r} family has no KV-cache `decode` yet, so it cannot "
            "generate; every causal family in mechjax.models has one (bert and toy do not)"
        )
    return mod.decode


def _hooks_at(st: _Static, model: Model, step: Array, hook_args) -> HookContext:
    if st.hooks_fn is None:
        ivs = normalize_hooks(hook_args)
    else:
        ivs = normalize_hooks(st.hooks_fn(step, hook_args) if st.pass_args else st.hooks_fn(step))
    sites_mod.check(ivs, model.sites)
    return HookContext(ivs)


def _next(st: _Static, logits: Array, key, step, temperature, top_p) -> Array:
    if st.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return sample_logits(
        logits,
        jax.random.fold_in(key, step),
        temperature=temperature,
        top_k=st.top_k,
        top_p=top_p if st.use_top_p else None,
    )


def _is_stop(st: _Static, tok: Array) -> Array:
    if not st.stop:
        return jnp.zeros(tok.shape, bool)
    return (tok[:, None] == jnp.asarray(st.stop, jnp.int32)[None, :]).any(-1)


class _State(NamedTuple):
    step: Array  # int32: index of the next token to generate
    cache: kv_cache.KVCache
    last: Array  # [batch] the token generated at step - 1
    out: Array  # [batch, max_new]
    done: Array  # [batch] bool
    lengths: Array  # [batch] int32


def _prefill(st: _Static, model, tokens, mask, key, temperature, top_p, hook_args) -> _State:
    decode = decode_fn(model)
    b = tokens.shape[0]
    step = jnp.zeros((), jnp.int32)
    cache = kv_cache.init(model.config, b, st.max_len, model.params["embed"]["W_E"].dtype)
    ctx = _hooks_at(st, model, step, hook_args)
    res = decode(
        model.params, tokens, model.config, cache, hook=ctx, attention_mask=mask, last_only=True
    )
    tok = _next(st, res.logits[:, -1], key, step, temperature, top_p)
    done = _is_stop(st, tok)
    out = jnp.full((b, st.max_new), st.pad, jnp.int32).at[:, 0].set(tok)
    lengths = jnp.where(done, 1, st.max_new).astype(jnp.int32)
    return _State(step + 1, res.cache, tok, out, done, lengths)


def _step(st: _Static, model, s: _State, key, temperature, top_p, hook_args) -> _State:
    decode = decode_fn(model)
    ctx = _hooks_at(st, model, s.step, hook_args)
    res = decode(model.params, s.last[:, None], model.config, s.cache, hook=ctx)
    tok = _next(st, res.logits[:, -1], key, s.step, temperature, top_p)
    tok = jnp.where(s.done, st.pad, tok)
    stop = _is_stop(st, tok) & ~s.done
    out = jax.lax.dynamic_update_slice(s.out, tok[:, None], (0, s.step))
    lengths = jnp.where(stop, s.step + 1, s.lengths)
    return _State(s.step + 1, res.cache, tok, out, s.done | stop, lengths)


def _with_transposed_unembed(model: Model) -> Model:
    """The model with `W_U_T` = W_U^T beside W_U (see `nn.unembed`), made once per loop.

    The transpose is a full copy of the unembedding (about 0.1 s for a 49k vocabulary on
    CPU), so it is paid once before the decode loop, where each step's logits then cost
    a third of the plain matmul's time.
    """
    unembed = model.params.get("unembed") if isinstance(model.params, dict) else None
    if not unembed or "W_U" not in unembed or "W_U_T" in unembed:
        return model
    w_t = jax.lax.optimization_barrier(jnp.transpose(unembed["W_U"]))
    params = nn.model_major_heads({**model.params, "unembed": {**unembed, "W_U_T": w_t}})
    return dataclasses.replace(model, params=params)


@functools.partial(jax.jit, static_argnums=0)
def _loop_jit(st: _Static, model, s: _State, key, temperature, top_p, hook_args):
    """Steps 1.. until every row has stopped or max_new tokens are out (prefill apart, so
    `iter_generate` shares its compiled program)."""

    model = _with_transposed_unembed(model)

    def cond(s):
        return (s.step < st.max_new) & ~jnp.all(s.done)

    def body(s):
        s = _step(st, model, s, key, temperature, top_p, hook_args)
        if st.progress:
            jax.debug.callback(_tick, s.step)
        return s

    s = jax.lax.while_loop(cond, body, s)
    return s.out, s.lengths


_prefill_jit = jax.jit(_prefill, static_argnums=0)
_step_jit = jax.jit(_step, static_argnums=0)


# ----------------------------------------------------------------------- host side


class _Plan(NamedTuple):
    st: _Static
    tokens: np.ndarray
    mask: np.ndarray
    key: Array
    temperature: Array
    top_p: Array
    hook_args: Any


def _left_pad(rows: list[list[int]], pad: int, width: int = 0) -> tuple[np.ndarray, np.ndarray]:
    width = max(width, max(len(r) for r in rows))
    tokens = np.full((len(rows), width), pad, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        tokens[i, width - len(r) :] = r
        mask[i, width - len(r) :] = True
    return tokens, mask


def prompt_rows(model: Model, prompts, attention_mask, chat: bool) -> list[list[int]]:
    """Prompts (str, list of str, token array or list of id lists) -> one id list per row."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if hasattr(prompts, "tokens") and hasattr(prompts, "attention_mask"):  # a tokenizer Batch
        batch: Any = prompts
        prompts, attention_mask = batch.tokens, batch.attention_mask
    if isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, str) for p in prompts):
        tok = model.tokenizer
        if tok is None:
            raise InputError("text prompts need a model with a tokenizer; pass token ids instead")
        if chat:
            prompts = [tok.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]
        return [tok.encode(p) for p in prompts]
    if chat:
        raise InputError("chat=True needs text prompts (the template is applied to text)")
    if (
        isinstance(prompts, (list, tuple))
        and prompts
        and all(isinstance(p, (list, tuple, np.ndarray)) for p in prompts)
        and attention_mask is None
    ):
        rows = [list(np.asarray(p, np.int64).reshape(-1)) for p in prompts]
    else:
        arr = np.asarray(prompts)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(
                "prompts must be a str, a list of str, a [batch, pos] integer array or a list "
                f"of token-id lists; got {type(prompts).__name__} of shape {arr.shape}"
            )
        m = np.ones(arr.shape, bool) if attention_mask is None else np.asarray(attention_mask, bool)
        if m.shape != arr.shape:
            raise InputError(f"attention_mask has shape {m.shape}, tokens have shape {arr.shape}")
        rows = [list(r[mr]) for r, mr in zip(arr, m)]
    if not rows:
        raise InputError("generate needs at least one prompt")
    return [[int(t) for t in r] for r in rows]


def _check_number(name, value, ok, valid: str):
    if not ok:
        raise InputError(f"{name}={value!r} is out of range; valid: {valid}")


def _plan(
    model: Model,
    prompts,
    max_new_tokens,
    *,
    hooks,
    hook_args,
    temperature,
    top_k,
    top_p,
    key,
    stop_tokens,
    chat,
    attention_mask,
    prompt_width=None,
) -> _Plan:
    cfg = model.config
    decode_fn(model)
    _check_number(
        "max_new_tokens",
        max_new_tokens,
        isinstance(max_new_tokens, (int, np.integer)) and max_new_tokens >= 1,
        "an integer >= 1",
    )
    _check_number(
        "temperature",
        temperature,
        isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0,
        "a finite number >= 0 (0 = greedy)",
    )
    greedy = temperature == 0
    if top_k is not None:
        _check_number(
            "top_k",
            top_k,
            isinstance(top_k, (int, np.integer)) and 1 <= top_k <= cfg.d_vocab,
            f"an integer in [1, d_vocab={cfg.d_vocab}] or None",
        )
    if top_p is not None:
        _check_number(
            "top_p",
            top_p,
            isinstance(top_p, (int, float)) and 0 < top_p <= 1,
            "a number in (0, 1] or None",
        )
    if greedy and (top_k is not None or top_p is not None):
        raise InputError(
            "top_k and top_p shape sampling; with temperature=0 (greedy) they "
            "would be ignored, so set temperature > 0 or leave them None"
        )
    if not greedy and key is None:
        raise InputError(
            "sampling (temperature > 0) needs an explicit PRNG key: key=jax.random.key(0)"
        )
    if key is not None and not isinstance(key, jax.Array):
        raise InputError(
            f"key must be a PRNG key array (jax.random.key(0)), got {type(key).__name__}"
        )
    tok = model.tokenizer
    pad = tok.pad_token_id if tok is not None and tok.pad_token_id is not None else 0
    if stop_tokens is None:
        stop_tokens = () if tok is None or tok.eos_token_id is None else (tok.eos_token_id,)
    stop = tuple(int(t) for t in np.atleast_1d(np.asarray(stop_tokens, np.int64)))
    for t in stop:
        _check_number("stop token", t, 0 <= t < cfg.d_vocab, f"ids in [0, {cfg.d_vocab})")
    rows = prompt_rows(model, prompts, attention_mask, chat)
    longest = max(len(r) for r in rows)
    if min(len(r) for r in rows) == 0:
        raise InputError("a prompt encodes to no tokens; every row needs at least one")
    n_ctx = getattr(cfg, "n_ctx", None)
    if n_ctx is not None and longest > n_ctx:
        raise InputError(
            f"the prompt has {longest} tokens, longer than the context window n_ctx={n_ctx}"
        )
    if n_ctx is not None and longest + max_new_tokens > n_ctx:
        raise InputError(
            f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) = "
            f"{longest + max_new_tokens} exceeds the context window n_ctx={n_ctx}; "
            f"ask for at most {n_ctx - longest} new tokens"
        )
    lo, hi = min(min(r) for r in rows), max(max(r) for r in rows)
    if lo < 0 or hi >= cfg.d_vocab:
        raise InputError(
            f"token id {lo if lo < 0 else hi} is outside the vocabulary [0, {cfg.d_vocab})"
        )
    if prompt_width is not None:
        _check_number(
            "prompt_width",
            prompt_width,
            isinstance(prompt_width, (int, np.integer)) and prompt_width >= longest,
            f"an integer >= the longest prompt ({longest} tokens), or None",
        )
        if n_ctx is not None and prompt_width + max_new_tokens > n_ctx:
            raise InputError(
                f"prompt_width ({prompt_width}) + max_new_tokens ({max_new_tokens}) exceeds "
                f"the context window n_ctx={n_ctx}"
            )
    tokens, mask = _left_pad(rows, pad, int(prompt_width or 0))
    if hooks is None or isinstance(hooks, dict):
        ivs = normalize_hooks(hooks)
        sites_mod.check(ivs, model.sites)
        hooks_fn, hook_args, pass_args = None, ivs, False
    elif callable(hooks):
        hooks_fn, pass_args = hooks, hook_args is not None
    else:
        raise InputError(
            f"hooks must be None, a dict or a function step -> dict, got {type(hooks).__name__}"
        )
    st = _Static(
        int(max_new_tokens),
        tokens.shape[1] + int(max_new_tokens),
        greedy,
        None if top_k is None else int(top_k),
        top_p is not None,
        stop,
        int(pad),
        hooks_fn,
        pass_args,
    )
    key = jax.random.key(0) if key is None else key
    return _Plan(
        st,
        tokens,
        mask,
        key,
        jnp.float32(temperature or 1.0),
        jnp.float32(1.0 if top_p is None else top_p),
        hook_args,
    )


def _texts(model: Model, st: _Static, out: np.ndarray, lengths: np.ndarray) -> list[str] | None:
    if model.tokenizer is None:
        return None
    texts = []
    for row, n in zip(out, lengths):
        ids = row[:n]
        if n and int(ids[-1]) in st.stop:
            ids = ids[:-1]
        texts.append(model.tokenizer.decode(ids))
    return texts


def generate(
    model: Model,
    prompts,
    max_new_tokens: int,
    *,
    hooks: Any = None,  # a dict or a function of the step, checked below
    hook_args: Any = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    key: Any = None,  # checked below: a PRNG key array
    stop_tokens: Sequence[int] | None = None,
    chat: bool = False,
    attention_mask=None,
    prompt_width: int | None = None,
    progress: bool | None = None,
) -> Generation:
    """Generate up to `max_new_tokens` tokens per prompt, in one compiled loop.

    Args:
      model: a model whose family has a KV-cache `decode` (every causal family).
      prompts: a str, a list of str (needs the model's tokenizer), a tokenizer `Batch`, a
        [batch, pos] token array (with `attention_mask` if padded, either side) or a list
        of id lists.
      max_new_tokens: how many tokens to generate at most.
      hooks: interventions at every step: a dict site -> intervention(s), or a function
        `step -> dict` (`step` a traced int32 scalar; 0 = the prefill pass over the prompt).
      hook_args: a pytree passed to `hooks(step, hook_args)` as a traced argument.
      temperature: 0 for greedy (argmax), > 0 to sample.
      top_k, top_p: keep the k most likely tokens / the smallest set of mass >= top_p.
      key: the PRNG key of sampling (required when temperature > 0).
      stop_tokens: ids that end a row (default: the tokenizer's EOS; () for none).
      chat: wrap each text prompt as a user message in the model's chat template.
      attention_mask: [batch, pos] bool for a padded token array.
      prompt_width: left-pad the prompts to this many tokens (at least the longest), so
        calls with prompts of different lengths share one compiled program; the text is
        the same as without it (position ids count real tokens only).
      progress: a tqdm bar on stderr (tokens per row, compile time apart); None: only for
        at least `LONG` new tokens on a terminal.

    Returns:
      `Generation(tokens, lengths, texts, prompt, prompt_mask)`.
    """
    show = show_progress(progress, max_new_tokens >= LONG)
    p = _plan(
        model,
        prompts,
        max_new_tokens,
        hooks=hooks,
        hook_args=hook_args,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        key=key,
        stop_tokens=stop_tokens,
        chat=chat,
        attention_mask=attention_mask,
        prompt_width=prompt_width,
    )
    t0 = time.perf_counter()
    with progress_bar(show, p.st.max_new, "generate", "tok") as bar, CompileClock() as clock:
        _ACTIVE_BAR.append(bar)
        try:
            bar.set_postfix_str("compiling", refresh=True)
            s = _prefill_jit(
                p.st,
                model,
                jnp.asarray(p.tokens),
                jnp.asarray(p.mask),
                p.key,
                p.temperature,
                p.top_p,
                p.hook_args,
            )
            # the prefill is shared with `iter_generate`; only the loop holds the callback
            loop_st = p.st._replace(progress=show)
            out, lengths = _loop_jit(loop_st, model, s, p.key, p.temperature, p.top_p, p.hook_args)
            exclude_compile(bar, clock.seconds)
            bar.set_postfix_str(f"compile {clock.seconds:.1f}s", refresh=False)
            out, lengths = np.asarray(out), np.asarray(lengths)
            if show:  # the last callbacks land on this bar, not on the next call's
                jax.effects_barrier()
        finally:
            _ACTIVE_BAR.remove(bar)
        # rows may all stop before max_new: the bar ends where the loop ended
        steps = int(lengths.max()) if lengths.size else 0
        bar.total = steps
        bar.update(steps - bar.n)
        bar.set_postfix_str(timing_note(clock.seconds, time.perf_counter() - t0))
    return Generation(out, lengths, _texts(model, p.st, out, lengths), p.tokens, p.mask)


def iter_generate(
    model: Model, prompts, max_new_tokens: int, *, progress: bool | None = None, **kwargs
) -> Iterator[np.ndarray]:
    """Stream generation: yield the next token of every row ([batch] ids) step by step.

    Same arguments and same tokens as `generate` (a key gives the same samples); each step
    is one compiled decode call, so the caller can print tokens as they come. Rows that
    have stopped yield the pad id; the iterator ends when every row has stopped.
    `progress` as in `generate` (the bar advances as the caller consumes tokens; pass
    False when the caller prints the tokens to the same terminal).
    """
    p = _plan(
        model,
        prompts,
        max_new_tokens,
        **{
            "hooks": None,
            "hook_args": None,
            "temperature": 0.0,
            "top_k": None,
            "top_p": None,
            "key": None,
            "stop_tokens": None,
            "chat": False,
            "attention_mask": None,
            **kwargs,
        },
    )
    show = show_progress(progress, max_new_tokens >= LONG)
    t0 = time.perf_counter()
    with progress_bar(show, p.st.max_new, "generate", "tok") as bar:
        with CompileClock() as clock:
            bar.set_postfix_str("compiling", refresh=True)
            s = _prefill_jit(
                p.st,
                model,
                jnp.asarray(p.tokens),
                jnp.asarray(p.mask),
                p.key,
                p.temperature,
                p.top_p,
                p.hook_args,
            )
            last = np.asarray(s.last)
        compile_s = clock.seconds
        exclude_compile(bar, clock.seconds)
        bar.update(1)
        yield last
        while int(s.step) < p.st.max_new and not bool(jnp.all(s.done)):
            with CompileClock() as clock:  # the first decode step compiles
                s = _step_jit(p.st, model, s, p.key, p.temperature, p.top_p, p.hook_args)
                last = np.asarray(s.last)
            compile_s += clock.seconds
            exclude_compile(bar, clock.seconds)
            bar.update(1)
            bar.set_postfix_str(timing_note(compile_s, time.perf_counter() - t0), refresh=False)
            yield last
        bar.total = bar.n
        bar.set_postfix_str(timing_note(compile_s, time.perf_counter() - t0))


from mechjax.generation_batch import generate_texts  # noqa: E402, F401  (re-export)
from mechjax.generation_beam import BeamGeneration, beam_search  # noqa: E402, F401
