"""Beam search with a KV cache, compiled in one program, with interventions at every step.

    out = mj.beam_search(model, ["The capital of France is"], 20, num_beams=4)
    out.texts, out.tokens, out.lengths, out.scores        # the best beam of each prompt
    out.beams, out.beam_lengths, out.beam_scores         # all num_beams finished beams

The algorithm is Hugging Face transformers' vectorised beam search (`_beam_search` since
4.50), step for step, so the same model gives the same sequences as HF's
`generate(num_beams=k, do_sample=False)` with the same `length_penalty` and
`early_stopping`:

- each step, the log-softmax of every beam's next-token logits is added to the beam's
  score; the best `max(2, 1 + n_stop) * k` continuations over all beams x vocabulary are
  kept (so k beams survive even if k of them stop here);
- a continuation that ends with a stop token, or reaches `max_new_tokens`, is finished: if
  it is among the k best, it joins the finished set with score `sum log p / length **
  length_penalty` (length = generated tokens, its stop token included), and the k best
  finished sequences are kept;
- the k best unfinished continuations run on (their KV-cache rows gathered);
- the search ends when every continuation is finished, when `early_stopping=True` and
  every prompt has k finished beams, or when HF's heuristic says no running beam can beat
  the worst finished one (`early_stopping=False`: judged at the current length;
  `"never"`: at `max_new_tokens` when `length_penalty > 0`).

With one beam and `early_stopping=True` (or no stop token) this is greedy decoding (a
test checks it against `mj.generate`). The prompt is run once per prompt and its cache
copied to the k beams; `hooks`, `hook_args`, `stop_tokens`, `chat`, `attention_mask` and
`prompt_width` mean what they mean in `mj.generate` (hooks see the k beams of a prompt as
k rows of the batch, so an intervention's values must not be per prompt). The whole search
is one `jit`-compiled `lax.while_loop` with no host transfer inside; `length_penalty` and
`early_stopping` are traced, so changing them does not recompile.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mechjax import kv_cache
from mechjax.errors import InputError
from mechjax.generation import (
    _hooks_at,
    _plan,
    _Static,
    _with_transposed_unembed,
    decode_fn,
)
from mechjax.model import Model

Array = jax.Array
NEG = -1.0e9  # HF's "impossible" score


class BeamGeneration(NamedTuple):
    """What `beam_search` returns (beams sorted best first).

    Attributes:
      tokens: [batch, max_new_tokens] the best beam's ids; the pad id after its length.
      lengths: [batch] generated tokens of the best beam, its stop token included.
      scores: [batch] the best beam's score, sum of log-probs / length ** length_penalty.
      texts: the best beam's text without its stop token (None without a tokenizer).
      beams: [batch, num_beams, max_new_tokens] every finished beam.
      beam_lengths: [batch, num_beams].
      beam_scores: [batch, num_beams].
      prompt: [batch, width] the left-padded prompt tokens that were run.
      prompt_mask: [batch, width] True for real prompt tokens.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    scores: np.ndarray
    texts: list[str] | None
    beams: np.ndarray
    beam_lengths: np.ndarray
    beam_scores: np.ndarray
    prompt: np.ndarray
    prompt_mask: np.ndarray


class _Beam(NamedTuple):
    """What shapes the compiled search beyond `generate`'s static settings."""

    base: _Static
    num_beams: int

    @property
    def keep(self) -> int:  # candidates kept per step (HF's beams_to_keep)
        return max(2, 1 + len(self.base.stop)) * self.num_beams


class _Options(NamedTuple):
    """The scoring settings, traced (one program serves every setting)."""

    length_penalty: Array  # float32
    early_true: Array  # bool: early_stopping=True
    never: Array  # bool: early_stopping="never"


class _State(NamedTuple):
    step: Array  # int32: index of the token generated next
    cache: kv_cache.KVCache  # batch * num_beams rows
    last: Array  # [batch * num_beams] the running beams' newest tokens
    run_seq: Array  # [batch, k, max_new] running beams
    run_scores: Array  # [batch, k] their summed log-probs, best first
    seqs: Array  # [batch, k, max_new] finished beams
    seq_lens: Array  # [batch, k]
    scores: Array  # [batch, k] their length-penalised scores
    finished: Array  # [batch, k] bool: the slot holds a finished beam
    unsat: Array  # [batch, 1] bool: a running beam may still beat the finished ones
    go: Array  # bool: search on


def _take(x: Array, idx: Array) -> Array:
    """x[b, idx[b, i], ...] for x [batch, n, ...], idx [batch, m]."""
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def _reorder(cache: kv_cache.KVCache, rows: Array) -> kv_cache.KVCache:
    """The cache's rows (batch axis of every per-row buffer) gathered by `rows`."""
    return dataclasses.replace(
        cache,
        k=tuple(x[rows] for x in cache.k),
        v=tuple(x[rows] for x in cache.v),
        positions=cache.positions[rows],
        valid=cache.valid[rows],
        next_position=cache.next_position[rows],
    )


def _select(bs: _Beam, opt: _Options, logits: Array, s: _State) -> _State:
    """One HF beam-search step on the logits [batch * k, d_vocab] of the running beams."""
    st, k = bs.base, bs.num_beams
    b = s.run_scores.shape[0]
    t = s.step
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    vocab = logp.shape[-1]
    logp = logp.reshape(b, k, vocab) + s.run_scores[:, :, None]
    top_lp, top_idx = jax.lax.top_k(logp.reshape(b, k * vocab), bs.keep)
    beam, tok = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    here = jnp.arange(st.max_new) == t
    cand = jnp.where(here, tok[:, :, None], _take(s.run_seq, beam))
    stop = jnp.asarray(st.stop or (-1,), jnp.int32)
    hits = (tok[..., None] == stop).any(-1) | (t + 1 >= st.max_new)
    # the k best unfinished continuations run on
    run_lp = top_lp + hits.astype(jnp.float32) * NEG
    run_scores, nxt = jax.lax.top_k(run_lp, k)
    run_seq, origin = _take(cand, nxt), _take(beam, nxt)
    # finished continuations among the k best join the finished set
    early_true, lp = opt.early_true, opt.length_penalty
    did = hits & (jnp.arange(bs.keep) < k)[None, :]
    fin = top_lp / (t + 1).astype(jnp.float32) ** lp
    full = jnp.all(s.finished, axis=-1, keepdims=True) & early_true
    fin = fin + full.astype(jnp.float32) * NEG
    fin = fin + (~s.unsat).astype(jnp.float32) * NEG
    fin = fin + (~did).astype(jnp.float32) * NEG
    merged = jnp.concatenate([s.scores, fin], axis=1)
    scores, pick = jax.lax.top_k(merged, k)
    seqs = _take(jnp.concatenate([s.seqs, cand], axis=1), pick)
    lens = jnp.concatenate([s.seq_lens, jnp.broadcast_to(t + 1, did.shape)], axis=1)
    seq_lens = _take(lens, pick)
    finished = _take(jnp.concatenate([s.finished, did], axis=1), pick)
    # HF's heuristic, judged at the new length
    best_len = jnp.where(opt.never & (lp > 0.0), st.max_new, t + 1).astype(jnp.float32)
    best = run_scores[:, :1] / best_len**lp
    worst = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), NEG)
    unsat = s.unsat & jnp.any(best > worst, axis=-1, keepdims=True)
    go = jnp.any(unsat) & ~(jnp.all(finished) & early_true) & ~jnp.all(hits)
    rows = (jnp.arange(b)[:, None] * k + origin).reshape(-1)
    last = jax.lax.dynamic_index_in_dim(run_seq, t, axis=2, keepdims=False).reshape(-1)
    return _State(
        t + 1,
        _reorder(s.cache, rows),
        last,
        run_seq,
        run_scores,
        seqs,
        seq_lens,
        scores,
        finished,
        unsat,
        go,
    )


@functools.partial(jax.jit, static_argnums=0)
def _search(bs: _Beam, model: Model, tokens: Array, mask: Array, opt: _Options, hook_args):
    """The prefill, its cache copied to the k beams, then steps until the search ends."""
    st, k = bs.base, bs.num_beams
    decode = decode_fn(model)
    b = tokens.shape[0]
    step = jnp.zeros((), jnp.int32)
    cache = kv_cache.init(model.config, b, st.max_len, model.params["embed"]["W_E"].dtype)
    res = decode(
        model.params,
        tokens,
        model.config,
        cache,
        hook=_hooks_at(st, model, step, hook_args),
        attention_mask=mask,
        last_only=True,
    )
    rows = jnp.repeat(jnp.arange(b), k)
    seq = jnp.full((b, k, st.max_new), st.pad, jnp.int32)
    s = _State(
        step,
        _reorder(res.cache, rows),
        jnp.zeros((b * k,), jnp.int32),
        seq,
        jnp.zeros((b, k)).at[:, 1:].set(NEG),  # only beam 0 spreads at the first step
        seq,
        jnp.zeros((b, k), jnp.int32),
        jnp.full((b, k), NEG),
        jnp.zeros((b, k), bool),
        jnp.ones((b, 1), bool),
        jnp.ones((), bool),
    )
    s = _select(bs, opt, res.logits[:, -1][rows], s)
    model = _with_transposed_unembed(model)

    def body(s: _State) -> _State:
        out = decode(
            model.params,
            s.last[:, None],
            model.config,
            s.cache,
            hook=_hooks_at(st, model, s.step, hook_args),
        )
        return _select(bs, opt, out.logits[:, -1], s._replace(cache=out.cache))

    return jax.lax.while_loop(lambda s: s.go & (s.step < st.max_new), body, s)


def beam_search(
    model: Model,
    prompts,
    max_new_tokens: int,
    *,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    hooks: Any = None,
    hook_args: Any = None,
    stop_tokens: Sequence[int] | None = None,
    chat: bool = False,
    attention_mask=None,
    prompt_width: int | None = None,
) -> BeamGeneration:
    """Beam search of up to `max_new_tokens` tokens per prompt, in one compiled program.

    Args:
      model: a model whose family has a KV-cache `decode`.
      prompts: as in `mj.generate` (text, token arrays, id lists, a tokenizer Batch).
      max_new_tokens: the longest continuation.
      num_beams: beams per prompt (k).
      length_penalty: a finished beam scores `sum log p / length ** length_penalty` (HF's
        default 1.0; 0.0 ranks by summed log-probability).
      early_stopping: True: stop a prompt once it has k finished beams; False: HF's
        heuristic at the current length; "never": the heuristic at the longest length.
      hooks, hook_args, stop_tokens, chat, attention_mask, prompt_width: as in
        `mj.generate`.

    Returns:
      `BeamGeneration`: the best beam per prompt and every finished beam with its score.
    """
    if not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
        raise InputError(f"num_beams={num_beams!r} is out of range; valid: an integer >= 1")
    if early_stopping not in (True, False, "never"):
        raise InputError(
            f"early_stopping={early_stopping!r}; valid: True, False or 'never' (HF's values)"
        )
    if not isinstance(length_penalty, (int, float)) or not np.isfinite(length_penalty):
        raise InputError(f"length_penalty={length_penalty!r}; valid: a finite number")
    d_vocab = model.config.d_vocab
    p = _plan(
        model,
        prompts,
        max_new_tokens,
        hooks=hooks,
        hook_args=hook_args,
        temperature=0.0,
        top_k=None,
        top_p=None,
        key=None,
        stop_tokens=stop_tokens,
        chat=chat,
        attention_mask=attention_mask,
        prompt_width=prompt_width,
    )
    bs = _Beam(p.st, int(num_beams))
    opt = _Options(
        jnp.float32(length_penalty),
        jnp.asarray(early_stopping is True),
        jnp.asarray(early_stopping == "never"),
    )
    if bs.keep > num_beams * d_vocab:
        raise InputError(
            f"num_beams={num_beams} keeps {bs.keep} candidates per step, more than the "
            f"{num_beams * d_vocab} there are (num_beams x d_vocab={d_vocab})"
        )
    s = _search(bs, model, jnp.asarray(p.tokens), jnp.asarray(p.mask), opt, p.hook_args)
    beams, lens, scores = (np.asarray(x) for x in (s.seqs, s.seq_lens, s.scores))
    best, best_len = beams[:, 0], lens[:, 0]
    texts = None
    if model.tokenizer is not None:
        texts = []
        for row, n in zip(best, best_len):
            ids = row[:n]
            if n and int(ids[-1]) in p.st.stop:
                ids = ids[:-1]
            texts.append(model.tokenizer.decode(ids))
    return BeamGeneration(
        best, best_len, scores[:, 0], texts, beams, lens, scores, p.tokens, p.mask
    )
