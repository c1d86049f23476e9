"""Repeated random tokens: the induction task, with no tokenizer."""

from __future__ import annotations

import numpy as np

from mechjax.tasks.batch import TaskBatch


def induction(
    d_vocab: int, n: int = 8, seed: int = 0, *, half: int = 10, bos: int | None = None, low: int = 0
) -> TaskBatch:
    """Repeated random tokens: clean = [bos] R R[:-1], answer R[-1].

    The corrupted prompt replaces the first half by other random tokens R', so the
    second half is no longer predictable; wrongs = R'[-1]. No tokenizer needed.
    Positions: prev (the first occurrence of the answer), end.
    """
    rng = np.random.RandomState(seed)
    r = rng.randint(low, d_vocab, (n, half))
    r2 = rng.randint(low, d_vocab, (n, half))
    same = r2 == r
    r2[same] = (r2[same] + 1 - low) % (d_vocab - low) + low
    prefix = np.full((n, 0 if bos is None else 1), bos if bos is not None else 0)
    clean = np.concatenate([prefix, r, r[:, :-1]], 1).astype(np.int32)
    corrupted = np.concatenate([prefix, r2, r[:, :-1]], 1).astype(np.int32)
    p = prefix.shape[1]
    return TaskBatch(
        clean=clean,
        corrupted=corrupted,
        answers=r[:, -1].astype(np.int32),
        wrongs=r2[:, -1].astype(np.int32),
        positions={
            "prev": np.full(n, p + half - 1, np.int32),
            "end": np.full(n, clean.shape[1] - 1, np.int32),
        },
        clean_text=(),
        corrupted_text=(),
        task="induction",
    )
