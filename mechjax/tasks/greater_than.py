"""Greater-than (Hanna et al. 2023): "The war lasted from the year 17YY to the year 17"."""

from __future__ import annotations

import dataclasses
import random

import numpy as np

from mechjax.tasks.batch import TaskBatch, _build, single_token

NOUNS = (
    "war",
    "dynasty",
    "reign",
    "expedition",
    "siege",
    "occupation",
    "strike",
    "campaign",
    "drought",
    "famine",
)


def greater_than(tokenizer, n: int = 32, seed: int = 0) -> TaskBatch:
    """Hanna et al. (2023): "The war lasted from the year 17YY to the year 17" -> > YY.

    The corrupted prompt starts the range at year XX01. answers = YY + 1 (the smallest
    correct two-digit continuation), wrongs = YY - 1; `info["years"]` holds YY per row for
    the probability-difference metric. Needs two-digit numbers to be single tokens
    (GPT-2-style tokenizers); a digit-split tokenizer raises `TaskError`.
    """
    single_token(tokenizer, "32")  # raises for digit-split vocabularies
    rng = random.Random(seed)
    rows, years = [], []
    for _ in range(n * 10):
        noun, century = rng.choice(NOUNS), rng.randint(11, 17)
        yy = rng.randint(2, 98)
        clean = f"The {noun} lasted from the year {century}{yy:02d} to the year {century}"
        corrupted = f"The {noun} lasted from the year {century}01 to the year {century}"
        rows.append(
            {
                "clean": clean,
                "corrupted": corrupted,
                "answer": single_token(tokenizer, f"{yy + 1:02d}"),
                "wrong": single_token(tokenizer, f"{yy - 1:02d}"),
                "spans": {"year": clean.index(f"{century}{yy:02d}") + 4},
            }
        )
        years.append(yy)
    batch = _build(rows, tokenizer, "greater_than", n)
    keep = [t for t in batch.clean_text]
    yy = [int(t.split(" to the year")[0][-2:]) for t in keep]
    return dataclasses.replace(batch, info={"years": np.asarray(yy, np.int32)})
