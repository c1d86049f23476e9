"""P(R) over candidate numbers from a model, with multi-token numbers handled.

The causal robustness framework (Stolfo, Jin et al., ACL 2023) restricts the model's
output to the numbers 0..max_n. A number that the tokenizer splits (SmolLM2 writes one
digit per token) gets the mean log-probability of its tokens under teacher forcing, and
P(n) is the softmax of those means over the candidates (`robustness.number_distribution`).
For single-token numbers this is the softmax of their logits restricted to the
candidates, as in the paper.

- `number_tokens`: each number's token ids as the tokenizer writes it after the prompt
  (tokenised jointly with the prompt, so merges across the boundary are seen; an error
  if the prompt's own tokens change);
- `number_logprobs`: per-token log-probs of every candidate continuation, all
  candidates in one right-padded batch (causal attention: padding after a row's tokens
  cannot change them; widths are rounded up to a multiple of 32 to reuse compiled runs);
- `number_probs`: the distribution over the candidates;
- `number_probs_batch`: the same for many prompts, fast: each prompt runs once into a KV
  cache, and the candidates' tokens run against it as the rows of a prefix tree
  (`candidate_rows`: a row per longest candidate prefix, so "1", "10" and "105" share the
  row " 10"). For 0..300 written one digit per token that is 27 rows of 3 tokens per
  prompt instead of 301 rows of prompt plus number; the log-probs are the same
  (`tests/test_evals_number_probs.py` checks them against `number_logprobs`).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mechjax.evals.robustness import number_distribution

__all__ = [
    "candidate_rows",
    "number_logprobs",
    "number_probs",
    "number_probs_batch",
    "number_tokens",
]

_BUCKET = 32


def number_tokens(
    tokenizer, prompt: str, numbers: Sequence[int], prefix: str = " "
) -> tuple[list[int], list[list[int]]]:
    """(prompt ids, ids of each number written as `prompt + prefix + str(n)`)."""
    base = tokenizer.encode(prompt)
    out = []
    for n in numbers:
        full = tokenizer.encode(f"{prompt}{prefix}{n}")
        if full[: len(base)] != base or len(full) == len(base):
            raise ValueError(
                f"the prompt's tokens change when {prefix + str(n)!r} follows it; end the "
                "prompt at a token boundary (e.g. move the space into the prompt, prefix='')"
            )
        out.append(full[len(base) :])
    return base, out


def number_logprobs(model, prompt_ids: Sequence[int], candidates: Sequence[Sequence[int]]):
    """log P(t_j | prompt, t_<j) for the tokens t of each candidate, one array per candidate."""
    from mechjax.model import run

    n_prompt = len(prompt_ids)
    width = n_prompt + max(len(c) for c in candidates)
    # widths rounded up to a multiple of 32: prompts of similar length share one program
    n_ctx = getattr(model.config, "n_ctx", None) or width
    width = min(-(-width // _BUCKET) * _BUCKET, max(width, n_ctx))
    tokens = np.zeros((len(candidates), width), np.int32)
    for i, c in enumerate(candidates):
        tokens[i, : n_prompt + len(c)] = list(prompt_ids) + list(c)
    logits = np.asarray(run(model, tokens).logits, np.float64)
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    out = []
    for i, c in enumerate(candidates):
        pos = np.arange(n_prompt - 1, n_prompt - 1 + len(c))
        out.append(logp[i, pos, np.asarray(c, np.int64)])
    return out


def number_probs(
    model, prompt: str, numbers: Sequence[int], prefix: str = " ", tokenizer=None
) -> np.ndarray:
    """P over `numbers` after `prompt` (mean token log-prob for multi-token numbers)."""
    tok = tokenizer if tokenizer is not None else model.tokenizer
    if tok is None:
        raise ValueError("number_probs needs a tokenizer (the model has none)")
    prompt_ids, cands = number_tokens(tok, prompt, numbers, prefix)
    return number_distribution([lp.tolist() for lp in number_logprobs(model, prompt_ids, cands)])


# ------------------------------------------------------------------ many prompts, fast


def candidate_rows(candidates: Sequence[Sequence[int]]) -> tuple[list[tuple[int, ...]], list[int]]:
    """Rows of token ids that hold every candidate's contexts, and each candidate's row.

    Candidate c needs the logits after the prompt and after each of c[:-1]'s prefixes; a
    row r with r[:len(c) - 1] == c[:-1] gives them all. The rows are the longest of the
    c[:-1] (none a prefix of another), so no context runs twice. Single-token
    candidates need no row: they map to -1 (the prompt's own last logits).
    """
    heads = sorted({tuple(c[:-1]) for c in candidates if len(c) > 1}, key=len, reverse=True)
    rows: list[tuple[int, ...]] = []
    for h in heads:
        if not any(r[: len(h)] == h for r in rows):
            rows.append(h)
    where = []
    for c in candidates:
        if not len(c):
            raise ValueError("every candidate needs at least one token")
        h = tuple(c[:-1])
        where.append(-1 if not h else next(i for i, r in enumerate(rows) if r[: len(h)] == h))
    return rows, where


@functools.partial(jax.jit, static_argnums=(0, 1))
def _tree_logprobs(decode, max_len, model, prompt, prompt_mask, rows, rows_mask):
    """log-softmax after each prompt [b, V] and at every row token [b, n_rows, k, V]."""
    from mechjax import kv_cache

    cfg = model.config
    b, n_rows, k = rows.shape
    cache = kv_cache.init(cfg, b, max_len, model.params["embed"]["W_E"].dtype)
    res = decode(model.params, prompt, cfg, cache, attention_mask=prompt_mask, last_only=True)
    first = jax.nn.log_softmax(res.logits[:, -1].astype(jnp.float32), -1)
    if k == 0:
        return first, jnp.zeros((b, 0, 0, first.shape[-1]), jnp.float32)
    tiled = jax.tree.map(lambda x: x if x.ndim == 0 else jnp.repeat(x, n_rows, 0), res.cache)
    out = decode(
        model.params,
        rows.reshape(b * n_rows, k),
        cfg,
        tiled,
        attention_mask=rows_mask.reshape(b * n_rows, k),
    )
    later = jax.nn.log_softmax(out.logits.astype(jnp.float32), -1)
    return first, later.reshape(b, n_rows, k, -1)


def number_probs_batch(
    model,
    prompts: Sequence[str],
    numbers: Sequence[int],
    prefix: str = " ",
    *,
    batch: int = 8,
    tokenizer=None,
) -> np.ndarray:
    """P over `numbers` after each prompt, `[len(prompts), len(numbers)]`.

    Equal to `number_probs` per prompt. Prompts are left-padded to a multiple of 32 tokens
    and run `batch` at a time (the last batch padded with copies), so a sweep compiles
    once per prompt width. Needs a family with a KV-cache `decode`.
    """
    from mechjax.generation import decode_fn

    tok = tokenizer if tokenizer is not None else model.tokenizer
    if tok is None:
        raise ValueError("number_probs_batch needs a tokenizer (the model has none)")
    if not len(prompts):
        return np.zeros((0, len(numbers)))
    decode = decode_fn(model)
    enc = [number_tokens(tok, p, numbers, prefix) for p in prompts]
    # rows depend on the candidates' tokens; prompts sharing them share one program
    groups: dict[tuple, list[int]] = {}
    for i, (_, cands) in enumerate(enc):
        groups.setdefault(tuple(tuple(c) for c in cands), []).append(i)
    out = np.zeros((len(prompts), len(numbers)))
    for cands, idx in groups.items():
        rows, where = candidate_rows(cands)
        k = max((len(r) for r in rows), default=0)
        row_ids = np.zeros((max(len(rows), 1), k), np.int32)
        row_mask = np.zeros(row_ids.shape, bool)
        for j, r in enumerate(rows):
            row_ids[j, : len(r)], row_mask[j, : len(r)] = r, True
        width = -(-max(len(enc[i][0]) for i in idx) // _BUCKET) * _BUCKET
        for s in range(0, len(idx), batch):
            part = idx[s : s + batch]
            part = part + [part[-1]] * (batch - len(part))
            ids = np.zeros((batch, width), np.int32)
            mask = np.zeros((batch, width), bool)
            for j, i in enumerate(part):
                p = enc[i][0]
                ids[j, width - len(p) :], mask[j, width - len(p) :] = p, True
            first, later = _tree_logprobs(
                decode,
                width + k,
                model,
                jnp.asarray(ids),
                jnp.asarray(mask),
                jnp.asarray(np.broadcast_to(row_ids, (batch, *row_ids.shape))),
                jnp.asarray(np.broadcast_to(row_mask, (batch, *row_mask.shape))),
            )
            first, later = np.asarray(first, np.float64), np.asarray(later, np.float64)
            n_real = min(batch, len(idx) - s)
            for j in range(n_real):
                lps = []
                for c, r in zip(cands, where):
                    lp = [first[j, c[0]]]
                    lp += [later[j, r, t, c[t + 1]] for t in range(len(c) - 1)]
                    lps.append(lp)
                out[part[j]] = number_distribution(lps)
    return out
