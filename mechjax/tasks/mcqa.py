"""Multiple-choice tasks of MIB (Mueller et al. 2025): copy-colors MCQA and ARC-style
questions from a local JSONL file, each with MIB's symbol counterfactual.

A question lists its options under symbols and ends with "Answer:"; the answer is the
correct option's symbol (" A"). The symbol counterfactual (MIB's `symbol_counterfactual`)
keeps the question, the options and the answer's position but writes other symbols, so
the corrupted run's answer is another token at the same place: answers = the clean
symbol, wrongs = the counterfactual's symbol at the answer position.

- `mcqa`: MIB's `copycolors_mcqa`, regenerated: "The {object} is {color}. What color is
  the {object}?" with the color among the options (MIB's exact wording is on the HF hub,
  not offline);
- `multiple_choice`: rows of a JSONL file in ARC's format
  (`{"question": {"stem", "choices": [{"label", "text"}]}, "answerKey": "B"}`) or a flat
  one (`{"question", "choices": [...] or {"label", "text"}, "answerKey"}`); prompts of
  different lengths are left-padded, with `info["attention_mask"]`, so the answer is
  read at the last position of every row.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from mechjax.tasks.batch import TaskBatch, TaskError, _build, _encode, _is_single, single_token

__all__ = ["COLORS", "COLOR_OBJECTS", "mcqa", "multiple_choice"]

COLOR_OBJECTS = ("ball", "car", "shirt", "hat", "cup", "book", "chair", "bike", "door", "box")
COLORS = ("red", "blue", "green", "yellow", "black", "white", "purple", "orange", "pink")
_LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _prompt(question: str, symbols, options) -> str:
    lines = "".join(f"{s}. {o}\n" for s, o in zip(symbols, options))
    return f"Question: {question}\n{lines}Answer:"


def _other_symbols(rng, tokenizer, used, k: int):
    pool = [x for x in _LETTERS if x not in used and _is_single(tokenizer, " " + x)]
    if len(pool) < k:
        raise TaskError(f"too few single-token letters for a symbol counterfactual of {k}")
    return rng.sample(pool, k)


def _pair_row(rng, tokenizer, question, options, answer: int, symbols) -> dict:
    cf = _other_symbols(rng, tokenizer, set(symbols), len(symbols))
    return {
        "clean": _prompt(question, symbols, options),
        "corrupted": _prompt(question, cf, options),
        "answer": single_token(tokenizer, " " + symbols[answer]),
        "wrong": single_token(tokenizer, " " + cf[answer]),
    }


def mcqa(tokenizer, n: int = 32, seed: int = 0, *, n_choices: int = 4) -> TaskBatch:
    """Copy-colors questions with the symbol counterfactual (see the module docstring).

    The correct option's position is uniform over the `n_choices` places.
    """
    if not 2 <= n_choices <= len(COLORS):
        raise TaskError(f"n_choices must be in 2..{len(COLORS)}, got {n_choices}")
    rng = random.Random(seed)
    symbols = _LETTERS[:n_choices]
    rows = []
    for _ in range(n * 10):
        obj, color = rng.choice(COLOR_OBJECTS), rng.choice(COLORS)
        options = rng.sample([c for c in COLORS if c != color], n_choices - 1)
        pos = rng.randrange(n_choices)
        options.insert(pos, color)
        q = f"The {obj} is {color}. What color is the {obj}?"
        rows.append(_pair_row(rng, tokenizer, q, options, pos, symbols))
    return _build(rows, tokenizer, "mcqa/symbol", n, {"n_choices": n_choices})


def _parse(row: dict, line: int) -> tuple[str, list[str], list[str], int]:
    """(stem, labels, texts, answer index) of one ARC-style or flat row."""
    q = row.get("question")
    choices = q.get("choices") if isinstance(q, dict) else row.get("choices")
    stem = q.get("stem") if isinstance(q, dict) else q
    if not isinstance(stem, str) or choices is None or "answerKey" not in row:
        raise TaskError(f"line {line}: needs question (or question.stem), choices, answerKey")
    if isinstance(choices, dict):
        labels, texts = list(map(str, choices["label"])), list(map(str, choices["text"]))
    elif choices and isinstance(choices[0], dict):
        labels = [str(c["label"]) for c in choices]
        texts = [str(c["text"]) for c in choices]
    else:
        texts = [str(c) for c in choices]
        labels = list(_LETTERS[: len(texts)])
    key = row["answerKey"]
    if isinstance(key, int) and not isinstance(key, bool):
        idx = key
    elif str(key) in labels:
        idx = labels.index(str(key))
    else:
        raise TaskError(f"line {line}: answerKey {key!r} is not one of the labels {labels}")
    if not 0 <= idx < len(texts):
        raise TaskError(f"line {line}: answerKey {key!r} out of range for {len(texts)} choices")
    return stem, labels, texts, idx


def multiple_choice(tokenizer, path: str | Path, n: int | None = None, seed: int = 0) -> TaskBatch:
    """ARC-style questions from a local JSONL file, with the symbol counterfactual.

    Rows whose clean and corrupted prompts differ in token length are dropped (MIB's
    filter keeps only same-length symbols); the rest are left-padded to one length.
    `n`: the first n usable rows (None: all).
    """
    p = Path(path)
    if not p.exists():
        raise TaskError(f"no such question file: {p}")
    rng = random.Random(seed)
    pairs = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{p}:{i}: not JSON ({e.msg})") from None
        stem, labels, texts, idx = _parse(row, i)
        if not all(_is_single(tokenizer, " " + x) for x in labels):
            continue
        r = _pair_row(rng, tokenizer, stem, texts, idx, labels)
        c, k = _encode(tokenizer, r["clean"]), _encode(tokenizer, r["corrupted"])
        if len(c) == len(k):
            pairs.append((r, c, k))
    if n is not None:
        pairs = pairs[:n]
    if not pairs or (n is not None and len(pairs) < n):
        raise TaskError(f"{p}: {len(pairs)} usable questions (asked for {n})")
    width = max(len(c) for _, c, _ in pairs)

    def left(ids):
        return [0] * (width - len(ids)) + ids

    mask = np.asarray([[0] * (width - len(c)) + [1] * len(c) for _, c, _ in pairs], bool)
    return TaskBatch(
        clean=np.asarray([left(c) for _, c, _ in pairs], np.int32),
        corrupted=np.asarray([left(k) for _, _, k in pairs], np.int32),
        answers=np.asarray([r["answer"] for r, _, _ in pairs], np.int32),
        wrongs=np.asarray([r["wrong"] for r, _, _ in pairs], np.int32),
        positions={"end": np.full(len(pairs), width - 1, np.int32)},
        clean_text=tuple(r["clean"] for r, _, _ in pairs),
        corrupted_text=tuple(r["corrupted"] for r, _, _ in pairs),
        task="multiple_choice/symbol",
        info={"attention_mask": mask, "source": str(p)},
    )
