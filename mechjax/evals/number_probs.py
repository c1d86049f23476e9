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
- `number_probs`: the distribution over the candidates.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mechjax.evals.robustness import number_distribution

__all__ = ["number_logprobs", "number_probs", "number_tokens"]

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
