"""Parsing "Answer:" / "Confidence:" model output and judging it by exact match.

HLE (Phan et al. 2025) asks the model for `Explanation:`, `Answer:` (or `Exact Answer:`)
and `Confidence: 0-100%`, and lets a judge LLM extract the final answer, decide
correctness ("or within a small margin of error for numerical problems") and read the
confidence (100 when missing). No judge model is available offline, so here:

- the answer is the text after the last `Answer:` / `Exact Answer:` / `Final Answer:`
  label (up to the end of its line); none means *unparseable*, which is judged wrong;
- the confidence is the number after the last `Confidence:` label, in percent, clamped
  to [0, 100]; a bare fraction ("Confidence: 0.85", no % sign) is read as 85%; none
  means *missing* and takes HLE's judge default of 100;
- correctness is exact match after normalisation (`normalize_answer`), numbers compared
  as numbers (with an optional tolerance), multiple-choice answers by their letter.

This is stricter than a judge model: a correct answer phrased differently is wrong.
"""

from __future__ import annotations

import math
import re
import string
from typing import NamedTuple

__all__ = [
    "ParsedResponse",
    "judge",
    "judge_exact_match",
    "judge_multiple_choice",
    "normalize_answer",
    "parse_number",
    "parse_response",
]

_ANSWER = re.compile(r"(?:exact\s+|final\s+)?answer\s*[:：]\s*(.*)", re.IGNORECASE)
_CONF = re.compile(r"confidence\s*(?:score)?\s*[:：]\s*([-+]?\d+(?:\.\d+)?)\s*(%?)", re.IGNORECASE)
_PUNCT = string.punctuation + " "
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")


class ParsedResponse(NamedTuple):
    """What `parse_response` read from one model output.

    `answer` is None when no answer label was found (unparseable: judged wrong);
    `confidence` is in percent, `confidence_missing` says it took the default of 100.
    """

    answer: str | None
    confidence: float
    confidence_missing: bool
    explanation: str | None


def parse_response(text: str | None, default_confidence: float = 100.0) -> ParsedResponse:
    """Read the answer and the confidence from a model's "Answer: ... Confidence: ..." text."""
    if not text:
        return ParsedResponse(None, default_confidence, True, None)
    answer = None
    explanation = None
    for line in text.splitlines():
        m = _ANSWER.search(line)
        if m:
            # "Answer: 7 Confidence: 90%" on one line: the answer stops at the label
            value = re.split(r"confidence\s*(?:score)?\s*[:：]", m.group(1), flags=re.I)[0]
            value = value.strip()
            answer = value if value else None
        e = re.match(r"\s*explanation\s*[:：]\s*(.*)", line, re.IGNORECASE)
        if e:
            explanation = e.group(1).strip()
    confs = _CONF.findall(text)
    if not confs:
        return ParsedResponse(answer, default_confidence, True, explanation)
    number, percent = confs[-1]
    value = float(number)
    if not percent and "." in number and 0.0 <= value <= 1.0:
        value *= 100.0
    return ParsedResponse(answer, min(max(value, 0.0), 100.0), False, explanation)


def normalize_answer(text: str) -> str:
    """Lower case, no LaTeX `$`/`\\boxed{}`, no articles or outer punctuation, single spaces."""
    t = text.strip()
    boxed = re.search(r"\\boxed\{(.*)\}", t)
    if boxed:
        t = boxed.group(1)
    t = t.replace("$", "").replace("**", "").lower()
    t = _ARTICLES.sub(" ", t)
    t = " ".join(t.split())
    # a leading sign belongs to the answer ("-5"); other outer punctuation does not
    return t.rstrip(_PUNCT).lstrip(_PUNCT.replace("-", "").replace("+", ""))


def parse_number(text: str) -> float | None:
    """The number `text` is (after normalisation): "1,000" -> 1000, "3/4" -> 0.75, else None."""
    t = normalize_answer(text).replace(" ", "")
    if not _NUMBER.fullmatch(t):
        return None
    t = t.replace(",", "")
    if "/" in t:
        num, den = t.split("/")
        return float(num) / float(den) if float(den) != 0 else None
    return float(t)


def judge_exact_match(answer: str | None, gold: str, *, rel_tol: float = 0.0) -> bool:
    """Whether `answer` equals `gold` after normalisation; numbers compared as numbers.

    `rel_tol` > 0 accepts numbers within that relative tolerance (HLE's judge accepts "a
    small margin of error" without saying how small; the default is exact).
    """
    if answer is None:
        return False
    a, g = parse_number(answer), parse_number(gold)
    if a is not None and g is not None:
        return math.isclose(a, g, rel_tol=rel_tol, abs_tol=0.0) or a == g
    return normalize_answer(answer) == normalize_answer(gold)


def _choice_letter(text: str) -> str | None:
    t = text.strip().replace("*", "")
    m = re.match(r"^[(\[]?([A-Za-z])[)\].:]?(?:\s|$)", t)
    return m.group(1).upper() if m else None


def judge_multiple_choice(answer: str | None, gold: str) -> bool:
    """Whether the letter that `answer` starts with ("B", "(b)", "B. text") is `gold`'s."""
    if answer is None:
        return False
    letter, gold_letter = _choice_letter(answer), _choice_letter(gold)
    return letter is not None and letter == gold_letter


def judge(
    answer: str | None, gold: str, answer_type: str = "exactMatch", *, rel_tol: float = 0.0
) -> bool:
    """`judge_multiple_choice` for "multipleChoice" items, else `judge_exact_match`."""
    if answer_type == "multipleChoice":
        return judge_multiple_choice(answer, gold)
    if answer_type != "exactMatch":
        raise ValueError(
            f"answer_type must be 'exactMatch' or 'multipleChoice', got {answer_type!r}"
        )
    return judge_exact_match(answer, gold, rel_tol=rel_tol)
