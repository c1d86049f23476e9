"""Evaluating a model on the paired cognitive-bias sets (Opedal, Stolfo et al., ICML 2024).

Prompting follows the paper's evaluation:

- direct: `"Q: {problem}\\nA: The answer (arabic numerals) is "`, greedy, 16 new tokens;
- zero-shot chain of thought (Kojima et al.'s two stages): `"Q: {problem}\\nA: Let's
  think step by step."` generates a reasoning; then the prompt, the reasoning and
  `"\\nTherefore, the answer (arabic numerals) is "` generate the answer.

The predicted number is the first number in the answer continuation (commas in numbers
are dropped); none means the item is wrong, counted in `n_unparsed_*`. `paired_summary`
gives accuracy per condition, the paired t-test p-value (the paper's test) and
McNemar's exact p-value, in the shape of the reproduction's results file.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np

from mechjax.evals.biases import ProblemPair
from mechjax.evals.calibration import Flags
from mechjax.evals.stats import mcnemar, paired_t

__all__ = [
    "COT_TRIGGER",
    "DIRECT_SUFFIX",
    "ANSWER_TRIGGER",
    "cot_prompt",
    "direct_prompt",
    "evaluate_pairs",
    "extract_number",
    "paired_summary",
]

DIRECT_SUFFIX = "The answer (arabic numerals) is "
COT_TRIGGER = "Let's think step by step."
ANSWER_TRIGGER = "Therefore, the answer (arabic numerals) is "
_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def direct_prompt(problem: str) -> str:
    return f"Q: {problem}\nA: {DIRECT_SUFFIX}"


def cot_prompt(problem: str) -> str:
    return f"Q: {problem}\nA: {COT_TRIGGER}"


def extract_number(text: str | None) -> float | None:
    """The first number in `text` ("1,200" -> 1200), or None."""
    if not text:
        return None
    m = _NUM.search(text)
    if not m:
        return None
    s = m.group(0).replace(",", "").rstrip(".")
    try:
        return float(s)
    except ValueError:
        return None


def paired_summary(correct_a: Flags, correct_b: Flags) -> dict[str, Any]:
    """{"acc_a", "acc_b", "p_value" (paired t), "p_mcnemar" (exact), "n"}; acc in [0, 1]."""
    a = np.asarray(correct_a, bool).reshape(-1).tolist()
    b = np.asarray(correct_b, bool).reshape(-1).tolist()
    if len(a) != len(b) or not a:
        raise ValueError(f"need equally many paired outcomes, got {len(a)} and {len(b)}")
    t = paired_t(a, b) if len(a) > 1 else None
    return {
        "acc_a": sum(a) / len(a),
        "acc_b": sum(b) / len(b),
        "p_value": float("nan") if t is None else t.p_value,
        "p_mcnemar": mcnemar(a, b).p_value,
        "n": len(a),
    }


def texts_of(out) -> list:
    """A `generate_fn`'s texts: its list as is, or the `.texts` of a `Generation`."""
    return list(out.texts if hasattr(out, "texts") else out)


def _answers(generate_fn, model, problems: Sequence[str], mode: str, max_new_tokens: int):
    if mode == "direct":
        return texts_of(generate_fn(model, [direct_prompt(p) for p in problems], max_new_tokens))
    if mode != "cot":
        raise ValueError(f"mode must be 'direct' or 'cot', got {mode!r}")
    first = [cot_prompt(p) for p in problems]
    reasons = texts_of(generate_fn(model, first, 4 * max_new_tokens))
    second = [f"{f} {r or ''}\n{ANSWER_TRIGGER}" for f, r in zip(first, reasons)]
    return texts_of(generate_fn(model, second, max_new_tokens))


def evaluate_pairs(
    model,
    pairs: Sequence[ProblemPair],
    *,
    mode: str = "direct",
    max_new_tokens: int = 16,
    batch_size: int = 16,
    generate_fn: Callable | None = None,
) -> dict:
    """Accuracy on conditions a and b of `pairs`, the paired tests, and per-item records.

    `generate_fn(model, prompts, max_new_tokens)` returns the texts (a list, or a
    `Generation`); it defaults to greedy `mechjax.generation.generate_texts` with
    `batch_size` rows per compiled call. The chain-of-thought reasoning stage gets
    4 * `max_new_tokens` tokens.
    """
    if generate_fn is None:
        from mechjax import generation

        def batched(model, prompts, max_new_tokens):
            return generation.generate_texts(model, prompts, max_new_tokens, batch=batch_size)

        generate_fn = batched

    outs: dict[str, list] = {"a": [], "b": []}
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s : s + batch_size]
        for side in ("a", "b"):
            texts = [getattr(p, side).text for p in chunk]
            outs[side] += _answers(generate_fn, model, texts, mode, max_new_tokens)
    correct = {}
    records = []
    for side in ("a", "b"):
        preds = [extract_number(t) for t in outs[side]]
        correct[side] = [
            x is not None and x == getattr(p, side).answer for x, p in zip(preds, pairs)
        ]
        records.append(preds)
    summary = paired_summary(correct["a"], correct["b"])
    summary["n_unparsed_a"] = sum(x is None for x in records[0])
    summary["n_unparsed_b"] = sum(x is None for x in records[1])
    summary["items"] = [
        {"answer": p.answer, "pred_a": pa, "pred_b": pb, "correct_a": ca, "correct_b": cb}
        for p, pa, pb, ca, cb in zip(pairs, records[0], records[1], correct["a"], correct["b"])
    ]
    return summary
