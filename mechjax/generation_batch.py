"""Generation over many prompts in a few compiled programs (evaluations, sweeps).

`generate_texts` (text prompts) and `generate_ids` (id-list prompts) call `mechjax.generate`
with a fixed batch size and prompt widths rounded up to a bucket, so a run over hundreds of
prompts of different lengths compiles a handful of programs, not one per call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mechjax.errors import InputError
from mechjax.model import Model


def generate_texts(
    model: Model,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    batch: int = 16,
    bucket: int = 32,
    chat: bool = False,
    generate_fn: Callable | None = None,
    **kwargs,
) -> list[str]:
    """The generated texts of many prompts, `batch` rows per `generate` call.

    The last call is padded with copies of its last prompt and every call's prompt width
    is rounded up to a multiple of `bucket` tokens, so an evaluation over hundreds of
    prompts of different lengths compiles a handful of programs, not one per call. Other
    keyword arguments go to `generate` (greedy by default), or to `generate_fn` when given
    (any function with `generate`'s first three arguments, `prompt_width=` and a `.texts`
    result, such as `mj.beam_search`).
    """
    from mechjax import generation as G

    fn = G.generate if generate_fn is None else generate_fn
    if batch < 1 or bucket < 1:
        raise InputError(f"batch and bucket must be >= 1, got {batch} and {bucket}")
    prompts = list(prompts)
    out: list[str] = []
    for s in range(0, len(prompts), batch):
        part = prompts[s : s + batch]
        rows = G.prompt_rows(model, part, None, chat)
        width = -(-max(len(r) for r in rows) // bucket) * bucket
        rows += [rows[-1]] * (batch - len(rows))
        g = fn(model, rows, max_new_tokens, prompt_width=width, **kwargs)
        assert g.texts is not None
        out += list(g.texts[: len(part)])
    return out


def generate_ids(
    model: Model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    batch: int = 16,
    bucket: int = 32,
    **kwargs,
) -> list[list[int]]:
    """The generated token ids of many id-list prompts, batched and bucketed as in
    `generate_texts` (for models without a tokenizer, e.g. ones trained on a closed
    vocabulary). Each row keeps its stop token when it stopped (pass `stop_tokens`).
    """
    from mechjax import generation as G

    if batch < 1 or bucket < 1:
        raise InputError(f"batch and bucket must be >= 1, got {batch} and {bucket}")
    prompts = [list(p) for p in prompts]
    out: list[list[int]] = []
    for s in range(0, len(prompts), batch):
        part = prompts[s : s + batch]
        width = -(-max(len(r) for r in part) // bucket) * bucket
        rows = part + [part[-1]] * (batch - len(part))
        g = G.generate(model, rows, max_new_tokens, prompt_width=width, **kwargs)
        out += [[int(t) for t in row[:n]] for row, n in zip(g.tokens[: len(part)], g.lengths)]
    return out
